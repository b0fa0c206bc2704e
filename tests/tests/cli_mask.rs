//! `juris mask test`: the policy author's dry run, on the shipped example
//! deployment, through the real binary.

use std::process::Output;

use juris_testkit::gateway::{juris_binary, workspace_root};

fn mask_test(args: &[&str]) -> anyhow::Result<Output> {
    let example = workspace_root().join("deploy/examples/single-region.toml");
    Ok(std::process::Command::new(juris_binary()?)
        .args(["mask", "test", "--config"])
        .arg(&example)
        .args(["--connection", "billing"])
        .args(args)
        .env_remove("JURIS_EU_WEST_MASK_KEY")
        .env("NO_COLOR", "1")
        .output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn value_rules_show_what_they_mask_and_where() -> anyhow::Result<()> {
    let output = mask_test(&[
        "4111 1111 1111 1111",
        "order 2026-000123 shipped",
        "ssn 123-45-6789 on file",
        "badge EMP-004211",
    ])?;
    assert!(output.status.success(), "{output:?}");
    let out = stdout(&output);
    assert!(out.contains("-> **** **** **** 1111"), "{out}");
    assert!(
        out.contains("order 2026-000123 shipped\n  -> (unchanged)"),
        "{out}"
    );
    assert!(out.contains("-> ssn [REDACTED] on file"), "{out}");
    assert!(out.contains("card at bytes 0..19 (partial)"), "{out}");
    assert!(out.contains("employee_id at bytes 6..16 (hash)"), "{out}");
    // The example's key comes from an unset variable: the tool says tokens differ.
    assert!(out.contains("stand-in key"), "{out}");
    assert!(out.contains("3 of 4 values masked"), "{out}");
    assert!(!out.contains("123-45-6789\n  -> 123-45-6789"));
    Ok(())
}

#[test]
fn column_rules_apply_to_the_named_column_and_files_of_values() -> anyhow::Result<()> {
    let output = mask_test(&["--column", "public.customers.ssn", "123-45-6789"])?;
    assert!(output.status.success(), "{output:?}");
    let out = stdout(&output);
    assert!(
        out.contains("column rule `public.customers.ssn` (partial)"),
        "{out}"
    );
    assert!(out.contains("-> ***-**-6789"), "{out}");

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("values.txt");
    std::fs::write(&file, "alice@example.com\nnothing\n")?;
    let output = mask_test(&[
        "--column",
        "public.customers.email",
        "--file",
        file.to_str().unwrap(),
    ])?;
    let out = stdout(&output);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(out.matches("-> tok_").count(), 2, "{out}");
    assert!(out.contains("2 of 2 values masked"), "{out}");
    Ok(())
}

#[test]
fn bad_arguments_are_clear_errors() -> anyhow::Result<()> {
    let output = mask_test(&["--column", "customers.ssn", "x"])?;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("schema.table.column"),
        "{output:?}"
    );
    let output = std::process::Command::new(juris_binary()?)
        .args(["mask", "test", "--config"])
        .arg(workspace_root().join("deploy/examples/single-region.toml"))
        .args(["--connection", "payroll", "x"])
        .output()?;
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("single-region.toml") && err.contains("payroll"),
        "{err}"
    );
    Ok(())
}
