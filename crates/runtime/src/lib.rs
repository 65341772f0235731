//! Placeholder: filled in by issue #2.
