//! `--help` of every command: it answers, lists only the command's own options, and describes
//! each one (issue 17).

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_reshard"))
        .args(args)
        .arg("--help")
        .env_remove("RESHARD_CATALOG")
        .output()
        .expect("run reshard");
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The subcommands `reshard --help` lists.
fn commands() -> Vec<String> {
    let top = help(&[]);
    let list = top
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .expect("a Commands section");
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The option lines of a help text: (the long option, whether a description follows it on its
/// line or on the next).
fn option_lines(text: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(spec) = t.strip_prefix("--").or_else(|| {
            t.get(4..)
                .filter(|_| t.starts_with('-'))
                .and_then(|r| r.strip_prefix("--"))
        }) else {
            continue;
        };
        let name = spec.split([' ', '=', '<']).next().unwrap_or("");
        let same_line = t.split("  ").filter(|p| !p.trim().is_empty()).count() > 1;
        let next = lines.get(i + 1).is_some_and(|n| {
            let n = n.trim_start();
            !n.is_empty() && !n.starts_with('-')
        });
        out.push((format!("--{name}"), same_line || next));
    }
    out
}

fn options(text: &str) -> Vec<String> {
    option_lines(text).into_iter().map(|(o, _)| o).collect()
}

#[test]
fn every_command_answers_help_and_describes_each_option() {
    let cmds = commands();
    assert!(cmds.len() >= 15, "{cmds:?}");
    for c in &cmds {
        for (o, described) in option_lines(&help(&[c])) {
            assert!(described, "{c}: {o} has no description");
        }
    }
}

/// `cancel`, `sync` and `complete` showed rollback's `--move` and `--max-fence` (and
/// `complete --move m1` completed the whole job).
#[test]
fn regression_rollback_options_shown_on_other_commands() {
    for c in ["cancel", "sync", "complete"] {
        let o = options(&help(&[c]));
        for rollback_only in ["--move", "--max-fence"] {
            assert!(
                !o.iter().any(|x| x == rollback_only),
                "{c} --help lists {rollback_only}: {o:?}"
            );
        }
    }
    let o = options(&help(&["rollback"]));
    for own in ["--move", "--max-fence", "--no-wait", "--lock-timeout"] {
        assert!(o.iter().any(|x| x == own), "rollback lacks {own}: {o:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_reshard"))
        .args(["cancel", "--move", "m1"])
        .env_remove("RESHARD_CATALOG")
        .output()
        .expect("run reshard");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
