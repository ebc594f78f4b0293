//! migsight lab.
