//! Knowledge index benchmark (issue 5 §6); see docs/performance.md.

fn main() {}
