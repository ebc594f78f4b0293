//! Micro-benchmark of the per-page sampling costs (read, hash, compare, copy, entropy).
use migsight_agent::guest_memory::{GuestMemory, PAGE};
use migsight_agent::procfs::thread_cpu_seconds;
use migsight_agent::sampler::*;
use migsight_proto::rng::Rng;

fn main() -> anyhow::Result<()> {
    let total = 131072usize;
    let mut mem = vec![0u8; total * PAGE];
    let mut rng = Rng::new(1);
    for c in mem.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let gm = GuestMemory::from_own_buffer(&mem);
    let k = 10000;
    let mut pages = sample_without_replacement(total as u64, k, &mut rng);
    pages.sort();
    let mut buf = vec![0u8; 1024 * PAGE];
    for round in 0..3 {
        let t = thread_cpu_seconds();
        for ch in pages.chunks(1024) {
            gm.read_pages(ch, &mut buf[..ch.len() * PAGE])?;
        }
        let read = thread_cpu_seconds() - t;
        let t = thread_cpu_seconds();
        let mut x = 0;
        for c in buf.chunks_exact(PAGE) {
            for _ in 0..10 {
                x ^= page_hash(c).0;
            }
        }
        let hash = (thread_cpu_seconds() - t) / 10.0 / 1024.0 * k as f64;
        let t = thread_cpu_seconds();
        let mut y = 0u32;
        let other = vec![1u8; PAGE];
        for c in buf.chunks_exact(PAGE) {
            for _ in 0..10 {
                y += modified_bytes(c, &other);
            }
        }
        let cmp = (thread_cpu_seconds() - t) / 10.0 / 1024.0 * k as f64;
        let t = thread_cpu_seconds();
        let mut z = 0.0;
        for c in buf.chunks_exact(PAGE) {
            z += byte_entropy(c);
        }
        let ent = (thread_cpu_seconds() - t) / 1024.0 * k as f64;
        println!("round {round}: per page read {:.3} us, hash {:.3} us, compare {:.3} us, entropy {:.3} us ({x} {y} {z})",
            read / k as f64 * 1e6, hash / k as f64 * 1e6, cmp / k as f64 * 1e6, ent / k as f64 * 1e6);
    }
    Ok(())
}
