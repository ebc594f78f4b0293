//! `migsight eval --holdout EXPR`: train on the rows outside a region of
//! the input space and score the rows inside it — how predictions hold when
//! a VM is bigger, a link faster or a guest dirtier than anything in
//! training.
//!
//! An expression is `COLUMN OP NUMBER` with `OP` one of `>=`, `>`, `<=`,
//! `<`, and `COLUMN` an input name (`VM_size`, `VM_ptr`, `VM_pdr`,
//! `DIRTY.RATIO`, `qemu_major`, …). A paired group is held out as a whole
//! when most of its rows match (its rows are one guest state, profiled once
//! per algorithm, so their values differ only by sampling noise).

use crate::data::Data;
use crate::inputs;
use std::collections::HashMap;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
}

/// A held-out region: rows whose input `column` compares with `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Holdout {
    pub column: usize,
    pub op: Op,
    pub value: f64,
    /// The expression as given, for reports.
    pub text: String,
}

impl Holdout {
    /// Parses `VM_size>=1024` (spaces allowed).
    pub fn parse(expr: &str) -> Result<Holdout, String> {
        let text: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        let (pos, op, len) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
            .into_iter()
            .find_map(|(s, op)| text.find(s).map(|p| (p, op, s.len())))
            .ok_or_else(|| {
                format!("--holdout {expr:?}: expected COLUMN>=NUMBER (or >, <=, <), e.g. 'VM_size>=1024'")
            })?;
        let name = &text[..pos];
        let number = &text[pos + len..];
        let column = match inputs::resolve(name).as_deref() {
            Some([c]) => *c,
            _ => {
                return Err(format!(
                    "--holdout {expr:?}: unknown input {name:?} (e.g. VM_size, VM_ptr, VM_pdr, DIRTY.RATIO, qemu_major)"
                ))
            }
        };
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("--holdout {expr:?}: {number:?} is not a number"))?;
        Ok(Holdout {
            column,
            op,
            value,
            text,
        })
    }

    /// Whether input value `v` is in the held-out region (an absent value is not).
    pub fn matches(&self, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        match self.op {
            Op::Ge => v >= self.value,
            Op::Gt => v > self.value,
            Op::Le => v <= self.value,
            Op::Lt => v < self.value,
        }
    }

    /// Per row of `data`: held out (1) or trained on (0), by paired group.
    pub fn folds(&self, data: &Data) -> Vec<usize> {
        let mut votes: HashMap<&str, (usize, usize)> = HashMap::new();
        for r in &data.rows {
            let e = votes.entry(r.group.as_str()).or_default();
            e.1 += 1;
            if self.matches(r.x[self.column]) {
                e.0 += 1;
            }
        }
        data.rows
            .iter()
            .map(|r| {
                let (yes, all) = votes[r.group.as_str()];
                usize::from(2 * yes > all)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migsight_proto::Feature;

    #[test]
    fn expressions_parse_and_match() {
        let h = Holdout::parse("VM_size >= 1024").unwrap();
        assert_eq!(h.column, Feature::VmSize.index());
        assert_eq!(h.op, Op::Ge);
        assert!(h.matches(1024.0) && !h.matches(1023.9) && !h.matches(f64::NAN));
        let h = Holdout::parse("VM_ptr<50").unwrap();
        assert!(h.matches(49.0) && !h.matches(50.0));
        assert_eq!(
            Holdout::parse("DIRTY.RATIO>0.5").unwrap().column,
            inputs::DIRTY_RATIO
        );
        for bad in ["VM_size", "size>=3", "VM_size>=abc", "VM_size>=inf", ">=3"] {
            assert!(Holdout::parse(bad).is_err(), "{bad}");
        }
    }
}
