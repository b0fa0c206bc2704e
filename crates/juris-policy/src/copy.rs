//! `COPY … TO STDOUT`: what a result stream of CopyData rows will look like.
//!
//! The server's CopyOutResponse only says "text or binary" and how many
//! columns; masking also needs to know whether the text is CSV, which
//! delimiter, quote and NULL marker it uses, and which columns the fields
//! are. [`copy_outs`] reads that from the statement itself and builds a
//! `SELECT` with the same columns, which the proxy describes to learn where
//! each field comes from (so column rules apply to COPY as to queries).

use pg_query::NodeEnum;
use pg_query::protobuf::{self, CopyStmt};

/// Data format of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDataFormat {
    Text,
    Csv,
    Binary,
}

/// One `COPY … TO STDOUT` statement, in statement order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOut {
    pub format: CopyDataFormat,
    /// The `DELIMITER` option's byte, when set and one byte long.
    pub delimiter: Option<u8>,
    /// The `NULL` option, when set.
    pub null: Option<String>,
    /// The `QUOTE` option's byte (CSV).
    pub quote: Option<u8>,
    /// The `ESCAPE` option's byte (CSV).
    pub escape: Option<u8>,
    /// Whether a header line comes first (CSV or text `HEADER`).
    pub header: bool,
    /// A `SELECT` whose result columns are the COPY's fields, in order;
    /// `None` when it cannot be built (the fields then stay anonymous).
    pub select: Option<String>,
}

/// Every `COPY … TO STDOUT` in `sql`, in order. Statements that do not
/// parse yield nothing (they will not run either).
pub fn copy_outs(sql: &str) -> Vec<CopyOut> {
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return Vec::new();
    };
    parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| match raw.stmt.as_ref()?.node.as_ref()? {
            NodeEnum::CopyStmt(c) if !c.is_from && !c.is_program && c.filename.is_empty() => {
                Some(copy_out(c))
            }
            _ => None,
        })
        .collect()
}

fn copy_out(stmt: &CopyStmt) -> CopyOut {
    let mut out = CopyOut {
        format: CopyDataFormat::Text,
        delimiter: None,
        null: None,
        quote: None,
        escape: None,
        header: false,
        select: select_for(stmt),
    };
    for option in &stmt.options {
        let Some(NodeEnum::DefElem(def)) = option.node.as_ref() else {
            continue;
        };
        let arg = def.arg.as_deref().and_then(|a| a.node.as_ref());
        let text = match arg {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        };
        let single_byte = || text.filter(|t| t.len() == 1).map(|t| t.as_bytes()[0]);
        match def.defname.as_str() {
            "format" => {
                out.format = match text.map(str::to_ascii_lowercase).as_deref() {
                    Some("csv") => CopyDataFormat::Csv,
                    Some("binary") => CopyDataFormat::Binary,
                    _ => CopyDataFormat::Text,
                }
            }
            // The old syntax `WITH CSV` / `WITH BINARY`.
            "csv" => out.format = CopyDataFormat::Csv,
            "binary" => out.format = CopyDataFormat::Binary,
            "delimiter" => out.delimiter = single_byte(),
            "null" => out.null = text.map(str::to_string),
            "quote" => out.quote = single_byte(),
            "escape" => out.escape = single_byte(),
            "header" => {
                out.header = match arg {
                    None => true,
                    Some(NodeEnum::Boolean(b)) => b.boolval,
                    Some(NodeEnum::Integer(i)) => i.ival != 0,
                    Some(NodeEnum::String(s)) => {
                        !matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "0")
                    }
                    _ => true,
                }
            }
            _ => {}
        }
    }
    out
}

/// `SELECT <columns> FROM <relation>` or the COPY's own query.
fn select_for(stmt: &CopyStmt) -> Option<String> {
    if let Some(query) = stmt.query.as_deref().and_then(|q| q.node.as_ref()) {
        return query.deparse(pg_query::DeparseOptions::default()).ok();
    }
    let relation: &protobuf::RangeVar = stmt.relation.as_ref()?;
    let mut name = String::new();
    if !relation.schemaname.is_empty() {
        name.push_str(&quote_ident(&relation.schemaname));
        name.push('.');
    }
    name.push_str(&quote_ident(&relation.relname));
    let columns: Vec<String> = stmt
        .attlist
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(quote_ident(&s.sval)),
            _ => None,
        })
        .collect();
    let list = if columns.is_empty() {
        "*".to_string()
    } else {
        columns.join(", ")
    };
    Some(format!("SELECT {list} FROM {name}"))
}

/// Always quoted: the parser has already folded case, so the quoted form is
/// exactly the catalog name.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_copies_describe_their_columns() {
        let copies = copy_outs("copy Public.Customers (ssn, \"Email\") to stdout");
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].format, CopyDataFormat::Text);
        assert_eq!(
            copies[0].select.as_deref(),
            Some("SELECT \"ssn\", \"Email\" FROM \"public\".\"customers\"")
        );
        let all = copy_outs("COPY customers TO STDOUT");
        assert_eq!(
            all[0].select.as_deref(),
            Some("SELECT * FROM \"customers\"")
        );
    }

    #[test]
    fn options_in_both_syntaxes() {
        let c = &copy_outs(
            "copy t to stdout with (format csv, delimiter ';', null 'NA', quote '''', escape '\\', header)",
        )[0];
        assert_eq!(c.format, CopyDataFormat::Csv);
        assert_eq!(c.delimiter, Some(b';'));
        assert_eq!(c.null.as_deref(), Some("NA"));
        assert_eq!(c.quote, Some(b'\''));
        assert_eq!(c.escape, Some(b'\\'));
        assert!(c.header);
        assert_eq!(
            copy_outs("copy t to stdout with csv header")[0].format,
            CopyDataFormat::Csv
        );
        assert_eq!(
            copy_outs("copy t to stdout (format binary)")[0].format,
            CopyDataFormat::Binary
        );
        assert!(!copy_outs("copy t to stdout (format csv, header false)")[0].header);
    }

    #[test]
    fn query_copies_keep_their_query_and_other_statements_are_ignored() {
        let copies = copy_outs(
            "select 1; copy (select ssn as x from customers where id = 1) to stdout; copy t from stdin; copy t to '/tmp/x'",
        );
        assert_eq!(copies.len(), 1);
        let select = copies[0].select.as_deref().unwrap();
        assert!(
            select.starts_with("SELECT ssn AS x FROM customers"),
            "{select}"
        );
        assert!(copy_outs("not sql").is_empty());
    }
}
