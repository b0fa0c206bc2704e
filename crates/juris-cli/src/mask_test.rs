//! `juris mask test`: a dry run of a connection's masking policy on values
//! given on the command line or in a file, for policy authors. Nothing is
//! contacted; the policy is compiled exactly as a node would compile it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use juris_config::Deployment;
use juris_mask::{Findings, Masker, Outcome, SourceColumn};

/// What to test.
#[derive(Debug, Clone)]
pub struct MaskTest {
    pub config: PathBuf,
    pub connection: String,
    /// Treat the values as this source column (`schema.table.column`), so
    /// column rules apply; without it only value rules do.
    pub column: Option<String>,
    /// Values given on the command line.
    pub values: Vec<String>,
    /// A file with one value per line.
    pub file: Option<PathBuf>,
}

/// Run the dry run and return the report to print.
pub fn run(test: &MaskTest) -> anyhow::Result<String> {
    let deployment = Deployment::load(&test.config)?;
    let Some(connection) = deployment.connection(&test.connection) else {
        bail!(
            "{}: connection `{}` is not declared",
            test.config.display(),
            test.connection
        );
    };
    let mut report = String::new();
    let key = deployment
        .regions
        .iter()
        .find(|r| r.name == connection.region)
        .and_then(|r| r.mask_hash_key.as_ref())
        .map(|k| k.resolve("mask_hash_key"));
    let key = match key {
        None => None,
        Some(Ok(key)) => Some(key.into_bytes()),
        Some(Err(e)) => {
            // Policy authors rarely hold the production key; tokens then
            // differ from the node's, but what gets masked does not.
            let _ = writeln!(
                report,
                "note: {e}; hash tokens below use a stand-in key and differ from the node's"
            );
            Some(b"juris-mask-test-stand-in-key".to_vec())
        }
    };
    let masker = Masker::compile(&connection.masking, key.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "{}: connection `{}`: {e}",
            test.config.display(),
            test.connection
        )
    })?;
    let column = test.column.as_deref().map(parse_column).transpose()?;
    let rule = column.as_ref().and_then(|(schema, table, name)| {
        masker.column_rule(
            Some(SourceColumn {
                schema,
                table,
                column: name,
            }),
            name,
        )
    });
    if let Some(column) = &test.column {
        match rule {
            Some(id) => {
                let _ = writeln!(
                    report,
                    "column {column}: column rule `{}` ({}) masks every value",
                    masker.column_label(id),
                    masker.column_strategy(id).name()
                );
            }
            None => {
                let _ = writeln!(report, "column {column}: no column rule; value rules apply");
            }
        }
    }
    let mut values = test.values.clone();
    if let Some(file) = &test.file {
        values.extend(read_lines(file)?);
    }
    if values.is_empty() {
        bail!("give values to test, or --file with one value per line");
    }
    let (mut masked_count, mut total) = (0usize, 0usize);
    for value in &values {
        total += 1;
        let mut out = Vec::new();
        let mut findings = Findings::default();
        let outcome = match rule {
            Some(id) => masker.mask_whole(id, value.as_bytes(), &mut out),
            None => masker.mask_value(value.as_bytes(), &mut out, &mut findings),
        };
        let shown = match outcome {
            Outcome::Unchanged => "(unchanged)".to_string(),
            Outcome::Null => "NULL".to_string(),
            Outcome::Rewritten => String::from_utf8_lossy(&out).into_owned(),
        };
        if !matches!(outcome, Outcome::Unchanged) {
            masked_count += 1;
        }
        let _ = writeln!(report, "{value}\n  -> {shown}");
        if rule.is_none() {
            for span in masker.scan(value.as_bytes()) {
                let strategy = findings
                    .iter()
                    .find(|f| f.detector == span.detector)
                    .map_or("?", |f| f.strategy.name());
                let _ = writeln!(
                    report,
                    "     {} at bytes {}..{} ({strategy})",
                    masker.detector_name(span.detector),
                    span.start,
                    span.end
                );
            }
        }
    }
    let _ = writeln!(report, "{masked_count} of {total} values masked");
    Ok(report)
}

fn parse_column(column: &str) -> anyhow::Result<(String, String, String)> {
    let parts: Vec<&str> = column.split('.').collect();
    match parts[..] {
        [schema, table, name] if !schema.is_empty() && !table.is_empty() && !name.is_empty() => {
            Ok((schema.to_string(), table.to_string(), name.to_string()))
        }
        _ => bail!("--column: `{column}` is not of the form schema.table.column"),
    }
}

fn read_lines(file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}
