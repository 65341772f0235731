//! Helpers shared by the fuzz targets (fuzz_targets/): how an input file is
//! cut into the parts a target feeds its parsers. Seeds stay readable: a
//! tag or a key on the first line, the document after it.

/// The first line (without its newline) and everything after it; `None`
/// when the first line is not UTF-8.
pub fn first_line(data: &[u8]) -> Option<(&str, &[u8])> {
    let (head, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    Some((std::str::from_utf8(head).ok()?, rest))
}

/// `data` cut where `sizes` says (each byte a piece's length, 0 read as
/// 1), the rest in one last piece: the frames a streamed body may arrive
/// in.
pub fn chunks<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for s in sizes {
        if rest.is_empty() {
            break;
        }
        let n = usize::from(*s).max(1).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// A run's failure of an invariant, with what broke it.
#[macro_export]
macro_rules! invariant {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            panic!("invariant broken: {}: {}", stringify!($cond), format!($($arg)+));
        }
    };
}
