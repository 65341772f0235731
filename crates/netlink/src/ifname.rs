//! The kernel's rule for interface names (`dev_valid_name` in
//! net/core/dev.c), which libcni's `ValidateInterfaceName` mirrors. The one
//! copy in the workspace: [`crate::link::validate_ifname`] checks names with
//! it before a netlink request, and plexus-cni checks `CNI_IFNAME` with it
//! (code 4).

/// Linux IFNAMSIZ minus the trailing NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// Why an interface name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfnameProblem {
    Empty,
    TooLong,
    Dots,
    BadChar,
}

impl IfnameProblem {
    pub fn reason(self) -> &'static str {
        match self {
            IfnameProblem::Empty => "interface name is empty",
            IfnameProblem::TooLong => "interface name is too long",
            IfnameProblem::Dots => "interface name is . or ..",
            IfnameProblem::BadChar => "interface name contains / or : or whitespace characters",
        }
    }
}

/// `None` when `name` is a valid interface name.
pub fn ifname_problem(name: &str) -> Option<IfnameProblem> {
    if name.is_empty() {
        Some(IfnameProblem::Empty)
    } else if name.len() > MAX_IFNAME_LEN {
        Some(IfnameProblem::TooLong)
    } else if name == "." || name == ".." {
        Some(IfnameProblem::Dots)
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        Some(IfnameProblem::BadChar)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_rule() {
        assert_eq!(ifname_problem("eth0"), None);
        assert_eq!(ifname_problem("a23456789012345"), None);
        assert_eq!(ifname_problem("eth0.100"), None);
        assert_eq!(ifname_problem(""), Some(IfnameProblem::Empty));
        assert_eq!(
            ifname_problem("a234567890123456"),
            Some(IfnameProblem::TooLong)
        );
        // Bytes, not characters: 8 two-byte characters are 16 bytes.
        assert_eq!(ifname_problem(&"ä".repeat(8)), Some(IfnameProblem::TooLong));
        for dots in [".", ".."] {
            assert_eq!(ifname_problem(dots), Some(IfnameProblem::Dots));
        }
        for bad in ["et/h0", "eth:0", "eth 0", "eth\t0", "eth\0x", "eth\n"] {
            assert_eq!(ifname_problem(bad), Some(IfnameProblem::BadChar), "{bad:?}");
        }
    }
}
