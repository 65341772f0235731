//! Plain-text tables for the commands' default output: columns padded to
//! their widest cell, two spaces apart.

use std::io::Write;

/// Write `header` and `rows` as a table.
pub fn write_table<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            ["A", "LONG"],
            &[["xyz".into(), "1".into()], ["q".into(), "".into()]],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A    LONG\nxyz  1\nq\n");
    }
}
