//! Choosing a free subnet for a node.
//!
//! SKELETON (issue 11, in progress).
