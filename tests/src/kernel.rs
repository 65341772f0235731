//! Kernel-feature tests: which tests the QEMU VM runs (tests/vm/), and the
//! skips that stand for them on a host whose kernel lacks the feature.
//!
//! One list, `tests/vm/kernel-tests.list`, is shared by the VM runner
//! (`tests/vm/kernel-tests.sh` runs exactly those tests, by exact name) and
//! by [`skip_kernel_feature`]: on the host, under `PLEXUS_REQUIRE_ALL=1`, a
//! kernel-feature skip passes only for a test on that list and only when
//! the VM run is part of this run (`PLEXUS_KERNEL_TESTS_COVERED=1`, which
//! scripts/test.sh sets unless `PLEXUS_SKIP_VM` is set). A test that skips
//! but that the VM never runs therefore fails CI instead of passing
//! unseen. The unit test below checks that the list is exactly the tests
//! whose source calls the skip.

use std::path::Path;

/// `<target> <test>` lines; `#` comments and blank lines ignored.
pub const VM_TEST_LIST: &str = include_str!("../vm/kernel-tests.list");

/// The (test target, test name) pairs the VM runs.
pub fn vm_tests() -> Vec<(&'static str, &'static str)> {
    VM_TEST_LIST
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some(t), Some(n), None) => (t, n),
                _ => panic!("tests/vm/kernel-tests.list: not `<target> <test>`: {l:?}"),
            }
        })
        .collect()
}

/// The test running on this thread: its target (the test binary's name
/// without cargo's hash) and its name (libtest names each test's thread
/// after the test).
pub fn current_test() -> Option<(String, String)> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    let target = match stem.rsplit_once('-') {
        Some((t, hash)) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => t,
        _ => stem,
    };
    let name = std::thread::current().name()?.to_string();
    (name != "main").then(|| (target.to_string(), name))
}

fn env_is(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v == "1")
}

/// Skip a test that needs a kernel feature this kernel lacks; the QEMU VM
/// runs it. Under `PLEXUS_REQUIRE_ALL=1` this fails unless the test is on
/// the VM's list and the VM run is part of this run; inside the VM it
/// always fails (the VM is where the test must run).
pub fn skip_kernel_feature(why: &str) {
    assert!(
        !env_is("PLEXUS_IN_VM"),
        "this test is the VM's to run, and the VM's kernel cannot run it: {why}"
    );
    let test = current_test();
    let listed = test
        .as_ref()
        .is_some_and(|(t, n)| vm_tests().iter().any(|(lt, ln)| lt == t && ln == n));
    let (target, name) = test.unwrap_or_else(|| ("?".into(), "?".into()));
    if crate::require_all() {
        assert!(
            listed,
            "PLEXUS_REQUIRE_ALL=1 and {target}::{name} cannot run on this kernel ({why}), \
             and the VM does not run it: add `{target} {name}` to tests/vm/kernel-tests.list"
        );
        assert!(
            env_is("PLEXUS_KERNEL_TESTS_COVERED"),
            "PLEXUS_REQUIRE_ALL=1, {target}::{name} cannot run on this kernel ({why}), \
             and the VM run (tests/vm/kernel-tests.sh) is not part of this run \
             (PLEXUS_KERNEL_TESTS_COVERED is not 1)"
        );
    }
    eprintln!(
        "SKIP here ({}): {why}",
        if listed {
            "tests/vm/kernel-tests.sh runs it"
        } else {
            "and NOT on the VM's list"
        }
    );
}

/// Skip a test that provokes the absence of a kernel feature this kernel
/// has (the missing-feature error cannot be produced here). The host run
/// covers it on machines that lack the feature (ours do), and the VM, whose
/// kernel has it, never runs it; so under `PLEXUS_REQUIRE_ALL=1` on a host
/// this fails: nothing in this run covers the test.
pub fn skip_kernel_has_feature(why: &str) {
    if !env_is("PLEXUS_IN_VM") {
        assert!(
            !crate::require_all(),
            "PLEXUS_REQUIRE_ALL=1 and this kernel has the feature whose absence this test \
             provokes, so no run covers it: {why}"
        );
    }
    eprintln!("SKIP: {why}");
}

/// The tests in `tests/tests/<target>.rs` whose body calls `marker` (a
/// function name followed by `(`), directly or through a `macro_rules!`
/// defined in that file whose body does. Reads rustfmt-formatted sources:
/// `#[test]` above `fn name(` at the start of a line, the body up to the
/// next line that is `}`.
pub fn tests_calling(tests_dir: &Path, marker: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(tests_dir)
        .expect("tests/tests")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    for f in files {
        let target = f.file_stem().unwrap().to_string_lossy().into_owned();
        let src = std::fs::read_to_string(&f).unwrap();
        for name in calling_in(&src, marker) {
            out.push((target.clone(), name));
        }
    }
    out
}

/// Top-level items of `src` as (first line, body).
fn items(src: &str) -> Vec<(&str, Vec<&str>, String)> {
    let mut out = Vec::new();
    let mut attrs: Vec<&str> = Vec::new();
    let mut lines = src.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("#[") {
            attrs.push(l);
            continue;
        }
        let opens = l.ends_with('{') && !l.starts_with(' ') && !l.starts_with('}');
        if opens {
            let mut body = String::new();
            for b in lines.by_ref() {
                if b == "}" {
                    break;
                }
                body.push_str(b);
                body.push('\n');
            }
            out.push((l, std::mem::take(&mut attrs), body));
        } else if !l.trim().is_empty() && !l.starts_with("//") {
            attrs.clear();
        }
    }
    out
}

fn calling_in(src: &str, marker: &str) -> Vec<String> {
    let items = items(src);
    let call = format!("{marker}(");
    // Macros that skip, to a fixpoint (a macro may call another).
    let mut macros: Vec<String> = Vec::new();
    loop {
        let before = macros.len();
        for (head, _, body) in &items {
            let Some(name) = head
                .strip_prefix("macro_rules! ")
                .and_then(|r| r.strip_suffix(" {"))
            else {
                continue;
            };
            let calls =
                body.contains(&call) || macros.iter().any(|m| body.contains(&format!("{m}!")));
            if calls && !macros.iter().any(|m| m == name) {
                macros.push(name.to_string());
            }
        }
        if macros.len() == before {
            break;
        }
    }
    items
        .iter()
        .filter(|(_, attrs, _)| attrs.iter().any(|a| a.trim() == "#[test]"))
        .filter_map(|(head, _, body)| {
            let name = head.strip_prefix("fn ")?.split('(').next()?;
            let calls =
                body.contains(&call) || macros.iter().any(|m| body.contains(&format!("{m}!(")));
            calls.then(|| name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tests_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
    }

    #[test]
    fn the_vm_list_is_the_tests_that_skip() {
        let mut listed: Vec<(String, String)> = vm_tests()
            .into_iter()
            .map(|(t, n)| (t.to_string(), n.to_string()))
            .collect();
        listed.sort();
        let mut skipping = tests_calling(&tests_dir(), "skip_kernel_feature");
        skipping.sort();
        assert!(
            !skipping.is_empty(),
            "the scan found no kernel-feature test"
        );
        let missing: Vec<_> = skipping.iter().filter(|t| !listed.contains(t)).collect();
        let extra: Vec<_> = listed.iter().filter(|t| !skipping.contains(t)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "tests/vm/kernel-tests.list and the tests that call skip_kernel_feature disagree:\n\
             skip but not listed (the VM would never run them): {missing:?}\n\
             listed but do not skip (renamed, gone, or no longer kernel-bound): {extra:?}"
        );
        // The opposite skip is never the VM's.
        for t in tests_calling(&tests_dir(), "skip_kernel_has_feature") {
            assert!(
                !listed.contains(&t),
                "{t:?} is listed but skips when the feature is present"
            );
        }
    }

    #[test]
    fn the_scan_sees_direct_calls_macros_and_nothing_else() {
        let src = r#"
macro_rules! require_x {
    () => {
        if !x() {
            plexus_tests::skip_kernel_feature("no x");
            return;
        }
    };
}

macro_rules! require_y {
    () => {
        require_x!();
    };
}

#[test]
fn direct() {
    plexus_tests::skip_kernel_feature("no x");
}

#[test]
#[ignore]
fn through_a_macro() {
    require_y!();
}

#[test]
fn plain() {
    assert!(true);
}

fn helper_not_a_test() {
    require_x!();
}
"#;
        assert_eq!(
            calling_in(src, "skip_kernel_feature"),
            ["direct", "through_a_macro"]
        );
    }

    #[test]
    fn the_current_test_is_this_one() {
        let (target, name) = current_test().expect("a test thread");
        assert_eq!(target, "plexus_tests");
        assert_eq!(name, "kernel::tests::the_current_test_is_this_one");
    }
}
