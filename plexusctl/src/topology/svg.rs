//! SVG through Graphviz: `dot -Tsvg` reads the DOT on stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The SVG, or `None` when `dot` is not installed.
pub fn from_dot(dot: &str) -> anyhow::Result<Option<Vec<u8>>> {
    from_dot_with("dot", dot)
}

fn from_dot_with(program: &str, dot: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut child = match Command::new(program)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("starting {program} -Tsvg")),
    };
    // Write from another thread: dot may fill its stdout pipe before it
    // has read all of its input.
    let mut stdin = child.stdin.take().context("dot's stdin")?;
    let input = dot.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .with_context(|| format!("running {program} -Tsvg"))?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writing to {program} panicked"))?
        .with_context(|| format!("writing the DOT to {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} -Tsvg failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Some(out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_graphviz_means_none() {
        assert!(from_dot_with("/nonexistent/dot", "digraph g {}")
            .unwrap()
            .is_none());
    }
}
