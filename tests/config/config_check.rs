//! `flowhq check` as operators and CI run it: the real binary, real files, exit codes and both
//! output formats.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn flowhq(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowhq"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn check_passes_on_the_examples_with_a_summary() {
    let out = flowhq(&["check", "tenants.d"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "checked 3 files: 0 errors, 0 warnings\n");
}

#[test]
fn check_exits_78_and_prints_every_diagnostic_and_the_summary() {
    let out = flowhq(
        &["check", "tests/fixtures/tenants/bad/duplicate-phone"],
        &[],
    );
    assert_eq!(out.status.code(), Some(78));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with(
        "tests/fixtures/tenants/bad/duplicate-phone/salon-a.toml:2:9: error: phone `+255712345678` is also used by tenant `salon-b`"
    ));
    assert_eq!(lines[2], "checked 3 files: 2 errors, 0 warnings");
}

#[test]
fn check_json_is_one_stable_document() {
    let out = flowhq(
        &[
            "check",
            "tests/fixtures/tenants/bad/duplicate-phone",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(78));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["files"], 3);
    assert_eq!(doc["tenants"], serde_json::json!(["salon-c"]));
    assert_eq!(doc["failed"], serde_json::json!(["salon-a", "salon-b"]));
    assert_eq!(doc["errors"], 2);
    assert_eq!(doc["warnings"], 0);
    let first = &doc["diagnostics"][0];
    assert_eq!(
        first["path"],
        "tests/fixtures/tenants/bad/duplicate-phone/salon-a.toml"
    );
    assert_eq!(first["line"], 2);
    assert_eq!(first["col"], 9);
    assert_eq!(first["severity"], "error");
}

#[test]
fn check_takes_the_directory_from_the_config_and_reports_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("t");
    fs::create_dir(&tenants).unwrap();
    fs::copy(
        "tenants.d/acme-support.toml",
        tenants.join("acme-support.toml"),
    )
    .unwrap();
    let config = dir.path().join("flowhq.toml");
    fs::write(
        &config,
        format!("tenants_dir = \"{}\"\n", tenants.display()),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let out = flowhq(&["check", "--config", config_arg], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "checked 1 file: 0 errors, 0 warnings\n");

    fs::write(
        &config,
        format!("tenants_dir = \"{}\"\nrescan = \"1m\"\n", tenants.display()),
    )
    .unwrap();
    let out = flowhq(&["check", "--config", config_arg], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stdout(&out).ends_with("checked 1 file: 1 error, 0 warnings\n"));
    assert_eq!(
        stdout(&out).lines().next().unwrap(),
        format!("{config_arg}:2:1: error: unknown field `rescan`, did you mean `rescan_interval`?")
    );
}

#[test]
fn without_arguments_check_reads_tenants_dir_from_the_environment() {
    let out = flowhq(&["check"], &[("FLOWHQ_TENANTS_DIR", "tenants.d")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = flowhq(
        &["check"],
        &[
            ("FLOWHQ_TENANTS_DIR", "tenants.d"),
            ("FLOWHQ_STATUS_LISTEN", "everywhere"),
        ],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(stdout(&out).starts_with("$FLOWHQ_STATUS_LISTEN:1:1: error: `status.listen`"));
    assert!(Path::new("tenants.d").is_dir());
}
