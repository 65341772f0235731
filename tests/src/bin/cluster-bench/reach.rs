//! All-pairs reachability: each pod pings every other pod's addresses with
//! fping (one try each, 1 ms apart) and pings again only those that did not
//! answer, until every one has answered once. The instant a set is complete
//! is the end of the fping round that completed it: an upper bound, within
//! one round (a few hundred ms at most) of the true time.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

use plexus_tests::Netns;

/// How long fping waits for each reply (ms).
const REPLY_MS: &str = "300";

/// When each named set of targets had all answered `pod`.
pub fn until_all_answer(
    pod: &Netns,
    sets: &[(&str, Vec<String>)],
    deadline: Instant,
) -> Result<Vec<Instant>, String> {
    let mut left: Vec<BTreeSet<String>> = sets
        .iter()
        .map(|(_, t)| t.iter().cloned().collect())
        .collect();
    let mut done: Vec<Option<Instant>> = left
        .iter()
        .map(|l| l.is_empty().then(Instant::now))
        .collect();
    while done.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            let missing: Vec<String> = sets
                .iter()
                .zip(&left)
                .filter(|(_, l)| !l.is_empty())
                .map(|((name, _), l)| {
                    format!("{name}: {} unanswered, e.g. {:?}", l.len(), l.first())
                })
                .collect();
            return Err(format!("from {}: {}", pod.name, missing.join("; ")));
        }
        let targets: BTreeSet<&String> = left.iter().flatten().collect();
        let alive = fping(pod, targets.into_iter())?;
        let now = Instant::now();
        for (l, d) in left.iter_mut().zip(done.iter_mut()) {
            l.retain(|t| !alive.contains(t));
            if l.is_empty() && d.is_none() {
                *d = Some(now);
            }
        }
    }
    Ok(done.into_iter().map(Option::unwrap).collect())
}

/// The targets that answered one ping each.
fn fping<'a>(
    pod: &Netns,
    targets: impl Iterator<Item = &'a String>,
) -> Result<BTreeSet<String>, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", pod.path().display()))
        .args(["fping", "-a", "-r", "0", "-i", "1", "-t", REPLY_MS])
        .args(targets)
        .output()
        .map_err(|e| format!("spawn fping: {e}"))?;
    // 0: all answered, 1: some did not; anything else is fping failing.
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(format!(
            "fping in {}: {}",
            pod.name,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect())
}
