//! Where result columns come from: table OID and attribute number (as a
//! RowDescription carries them) → `schema.table.column`, through views.
//!
//! Column masking rules name source columns, and clients rename them at will
//! (`SELECT ssn AS x`, views, `SELECT *`). PostgreSQL tells us, for every
//! plain column reference, the relation and attribute it came from; this
//! module maps those to names by asking the catalog over the gateway's own
//! upstream connection (one per connection, never a client's session, so a
//! client's transaction state or `search_path` cannot interfere).
//!
//! For a view PostgreSQL reports the view's own column. To see through it,
//! the view's definition is *described* (Parse + Describe, never executed)
//! on the catalog connection: the description of the defining query
//! reports the columns it reads, recursively for views over views.
//!
//! Results are cached per connection and dropped when any session of the
//! connection runs DDL through this node. Schema changes the node cannot see
//! (a migration run directly on the database, or through another node)
//! are picked up when an entry is older than the cache's time to live
//! (`node.masking_catalog_ttl_ms`, 1 s by default; 0 asks every time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use juris_pgwire::{BackendMessage, FieldDescription, FrontendMessage, Limits, Target};
use tokio::io::AsyncWriteExt;

use crate::io::{BoxedStream, read_frame};
use crate::upstream::UpstreamTarget;

/// How deep views over views are followed.
const MAX_VIEW_DEPTH: usize = 8;
/// How long one catalog round trip may take before the lookup fails.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

/// A fully qualified column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedColumn {
    pub schema: String,
    pub table: String,
    pub column: String,
}

/// Where one column of a relation comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnOrigin {
    /// The relation's own column (a view's column for a view).
    pub own: QualifiedColumn,
    /// For a view column that is a plain reference: the base table column.
    pub base: Option<QualifiedColumn>,
}

/// Catalog lookups failed; the caller must not guess.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot open the catalog connection: {0}")]
    Connect(String),
    #[error("the catalog connection failed: {0}")]
    Io(String),
    #[error("the catalog query failed: {0}")]
    Server(String),
    #[error("the catalog connection did not answer within {0:?}")]
    Timeout(Duration),
}

type Relations = HashMap<u32, (Instant, Arc<HashMap<i16, ColumnOrigin>>)>;

/// Catalog cache and connection for one Juris connection.
pub struct Catalog {
    target: Arc<UpstreamTarget>,
    limits: Limits,
    connection: tokio::sync::Mutex<Option<CatalogConnection>>,
    relations: RwLock<Relations>,
    ttl: Duration,
    /// Bumped on invalidation so a lookup that raced with DDL is not cached.
    generation: AtomicU64,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("connection", &self.target.connection)
            .finish()
    }
}

impl Catalog {
    /// `ttl`: how long a relation's columns are trusted without asking again.
    pub fn new(target: Arc<UpstreamTarget>, limits: Limits, ttl: Duration) -> Self {
        Catalog {
            target,
            limits,
            connection: tokio::sync::Mutex::new(None),
            relations: RwLock::new(HashMap::new()),
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    /// Forget everything: a session ran DDL.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.write_cache().clear();
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Relations> {
        self.relations.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Relations> {
        self.relations.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The origin of each `(table_oid, attnum)`; `None` for computed
    /// columns and relations the catalog does not show (e.g. another
    /// session's uncommitted table).
    pub async fn origins(
        &self,
        columns: &[(u32, i16)],
    ) -> Result<Vec<Option<ColumnOrigin>>, CatalogError> {
        let now = Instant::now();
        let fresh = |cache: &Relations, oid: &u32| {
            cache
                .get(oid)
                .is_some_and(|(loaded, _)| now.duration_since(*loaded) < self.ttl)
        };
        let mut missing: Vec<u32> = {
            let cache = self.read_cache();
            columns
                .iter()
                .map(|(oid, _)| *oid)
                .filter(|oid| *oid != 0 && !fresh(&cache, oid))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let generation = self.generation.load(Ordering::Acquire);
            let mut guard = self.connection.lock().await;
            let loaded = tokio::time::timeout(CATALOG_TIMEOUT, async {
                let connection = self.connected(&mut guard).await?;
                load_relations(connection, &missing).await
            })
            .await;
            let loaded = match loaded {
                Ok(Ok(loaded)) => loaded,
                Ok(Err(e)) => {
                    // A broken connection is reopened next time.
                    *guard = None;
                    return Err(e);
                }
                Err(_) => {
                    *guard = None;
                    return Err(CatalogError::Timeout(CATALOG_TIMEOUT));
                }
            };
            let mut cache = self.write_cache();
            if self.generation.load(Ordering::Acquire) == generation {
                for oid in &missing {
                    let relation = Arc::new(loaded.get(oid).cloned().unwrap_or_default());
                    cache.insert(*oid, (now, relation));
                }
            }
            // Answer from what was loaded even when it could not be cached.
            return Ok(columns
                .iter()
                .map(|(oid, attnum)| {
                    loaded
                        .get(oid)
                        .and_then(|r| r.get(attnum).cloned())
                        .or_else(|| cache.get(oid).and_then(|(_, r)| r.get(attnum).cloned()))
                })
                .collect());
        }
        let cache = self.read_cache();
        Ok(columns
            .iter()
            .map(|(oid, attnum)| cache.get(oid).and_then(|(_, r)| r.get(attnum).cloned()))
            .collect())
    }

    /// Describe a query without running it: its result columns with origins.
    pub async fn describe(&self, sql: &str) -> Result<Vec<FieldDescription>, CatalogError> {
        let mut guard = self.connection.lock().await;
        let described = tokio::time::timeout(CATALOG_TIMEOUT, async {
            let connection = self.connected(&mut guard).await?;
            connection.describe(sql).await
        })
        .await;
        match described {
            Ok(Ok(fields)) => Ok(fields),
            Ok(Err(e)) => {
                if !matches!(e, CatalogError::Server(_)) {
                    *guard = None;
                }
                Err(e)
            }
            Err(_) => {
                *guard = None;
                Err(CatalogError::Timeout(CATALOG_TIMEOUT))
            }
        }
    }

    async fn connected<'a>(
        &self,
        slot: &'a mut Option<CatalogConnection>,
    ) -> Result<&'a mut CatalogConnection, CatalogError> {
        if slot.is_none() {
            let parameters = [("application_name".to_string(), "juris-catalog".to_string())];
            let session = self
                .target
                .connect(&parameters, &self.limits)
                .await
                .map_err(|e| CatalogError::Connect(e.to_string()))?;
            *slot = Some(CatalogConnection {
                stream: session.stream,
                buf: session.leftover,
                limits: self.limits,
            });
        }
        Ok(slot.as_mut().expect("just set"))
    }
}

/// Load relations (and, through views, their base columns).
async fn load_relations(
    connection: &mut CatalogConnection,
    oids: &[u32],
) -> Result<HashMap<u32, HashMap<i16, ColumnOrigin>>, CatalogError> {
    let mut out: HashMap<u32, HashMap<i16, ColumnOrigin>> = HashMap::new();
    // View column → the column its defining query reads, when a plain reference.
    let mut references: HashMap<(u32, i16), (u32, i16)> = HashMap::new();
    let mut views: Vec<u32> = Vec::new();
    let mut pending: Vec<u32> = oids.to_vec();
    for _ in 0..=MAX_VIEW_DEPTH {
        pending.retain(|oid| !out.contains_key(oid));
        pending.sort_unstable();
        pending.dedup();
        if pending.is_empty() {
            break;
        }
        let list = pending
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let rows = connection
            .query(&format!(
                "SELECT c.oid, c.relkind, n.nspname, c.relname, a.attnum, a.attname \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
                 WHERE c.oid IN ({list}) AND a.attnum > 0 AND NOT a.attisdropped"
            ))
            .await?;
        let mut new_views = Vec::new();
        for row in rows {
            let [oid, kind, schema, table, attnum, column] = &row[..] else {
                continue;
            };
            let (Some(oid), Some(attnum)) = (
                oid.as_deref().and_then(|v| v.parse::<u32>().ok()),
                attnum.as_deref().and_then(|v| v.parse::<i16>().ok()),
            ) else {
                continue;
            };
            let own = QualifiedColumn {
                schema: schema.clone().unwrap_or_default(),
                table: table.clone().unwrap_or_default(),
                column: column.clone().unwrap_or_default(),
            };
            if matches!(kind.as_deref(), Some("v") | Some("m")) && !new_views.contains(&oid) {
                new_views.push(oid);
            }
            out.entry(oid)
                .or_default()
                .insert(attnum, ColumnOrigin { own, base: None });
        }
        for oid in &pending {
            out.entry(*oid).or_default();
        }
        pending.clear();
        for view in &new_views {
            let definition = connection
                .query(&format!(
                    "SELECT pg_catalog.pg_get_viewdef({view}::pg_catalog.oid)"
                ))
                .await?;
            let Some(Some(sql)) = definition
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
            else {
                continue;
            };
            // A definition that no longer describes leaves the view's columns
            // without a base: value detectors still apply to them.
            let Ok(fields) = connection.describe(sql.trim_end_matches(';')).await else {
                continue;
            };
            for (index, field) in fields.iter().enumerate() {
                let Ok(attnum) = i16::try_from(index + 1) else {
                    break;
                };
                if field.table_oid != 0 {
                    references.insert((*view, attnum), (field.table_oid, field.column_attr));
                    pending.push(field.table_oid);
                }
            }
        }
        views.extend(new_views);
    }
    let bases: Vec<((u32, i16), Option<QualifiedColumn>)> = references
        .keys()
        .map(|key| {
            (
                *key,
                base_of(&out, &references, &views, *key, MAX_VIEW_DEPTH),
            )
        })
        .collect();
    for ((view, attnum), base) in bases {
        if let Some(origin) = out.get_mut(&view).and_then(|c| c.get_mut(&attnum)) {
            origin.base = base;
        }
    }
    Ok(out)
}

/// The base table column behind a view column, following views over views.
fn base_of(
    relations: &HashMap<u32, HashMap<i16, ColumnOrigin>>,
    references: &HashMap<(u32, i16), (u32, i16)>,
    views: &[u32],
    column: (u32, i16),
    depth: usize,
) -> Option<QualifiedColumn> {
    let target = *references.get(&column)?;
    if views.contains(&target.0) {
        if depth == 0 {
            return None;
        }
        return base_of(relations, references, views, target, depth - 1);
    }
    relations
        .get(&target.0)
        .and_then(|r| r.get(&target.1))
        .map(|o| o.own.clone())
}

/// The gateway's own session on an upstream, for catalog questions only.
struct CatalogConnection {
    stream: BoxedStream,
    buf: BytesMut,
    limits: Limits,
}

impl CatalogConnection {
    async fn send(&mut self, messages: &[FrontendMessage]) -> Result<(), CatalogError> {
        let mut out = BytesMut::new();
        for message in messages {
            message.encode(&mut out);
        }
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| CatalogError::Io(e.to_string()))?;
        self.stream
            .flush()
            .await
            .map_err(|e| CatalogError::Io(e.to_string()))
    }

    async fn next(&mut self) -> Result<BackendMessage, CatalogError> {
        let frame = read_frame(&mut self.stream, &mut self.buf, &self.limits)
            .await
            .map_err(|e| CatalogError::Io(e.to_string()))?
            .ok_or_else(|| CatalogError::Io("the upstream closed the connection".into()))?;
        BackendMessage::decode(&frame).map_err(|e| CatalogError::Io(e.to_string()))
    }

    /// Run one simple query; rows as text.
    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, CatalogError> {
        self.send(&[FrontendMessage::Query { sql: sql.into() }])
            .await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next().await? {
                BackendMessage::DataRow { values } => rows.push(
                    values
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .collect(),
                ),
                BackendMessage::ErrorResponse(fields) => {
                    error = Some(fields.message().unwrap_or("unknown error").to_string());
                }
                BackendMessage::ReadyForQuery { .. } => break,
                _ => {}
            }
        }
        match error {
            Some(message) => Err(CatalogError::Server(message)),
            None => Ok(rows),
        }
    }

    /// Parse and describe a statement without executing it.
    async fn describe(&mut self, sql: &str) -> Result<Vec<FieldDescription>, CatalogError> {
        self.send(&[
            FrontendMessage::Parse {
                name: String::new(),
                sql: sql.into(),
                param_types: Vec::new(),
            },
            FrontendMessage::Describe {
                target: Target::Statement,
                name: String::new(),
            },
            FrontendMessage::Sync,
        ])
        .await?;
        let mut fields = Vec::new();
        let mut error = None;
        loop {
            match self.next().await? {
                BackendMessage::RowDescription { fields: described } => fields = described,
                BackendMessage::ErrorResponse(e) => {
                    error = Some(e.message().unwrap_or("unknown error").to_string());
                }
                BackendMessage::ReadyForQuery { .. } => break,
                _ => {}
            }
        }
        match error {
            Some(message) => Err(CatalogError::Server(message)),
            None => Ok(fields),
        }
    }
}
