//! migsight agent.
