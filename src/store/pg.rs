//! A store on PostgreSQL: opening it, its schema version, and `db migrate`.
//!
//! Only `cachewarden db migrate`, run by the schema's owner, changes the schema: every other
//! command checks the version and goes on, or refuses. Migrations are additive, so a store
//! migrated by a newer release stays writable by this one as long as the newer release says so
//! (`schema_version.writable_by`): a fleet's hooks keep recording during a rolling upgrade.

use std::path::{Path, PathBuf};

use super::db::{Db, DbError, PgConn};
use super::postgres::connect::{Location, PgUrl, Timeouts};
use super::{Access, Migrated, Store, StoreError};

/// The timeouts of this process's PostgreSQL connections, from the config's `[store]`.
static TIMEOUTS: std::sync::OnceLock<Timeouts> = std::sync::OnceLock::new();

/// Sets the timeouts of PostgreSQL connections from the config's `[store]` (once, at start).
pub fn configure(store: &crate::config::StoreConfig) {
    let _ = TIMEOUTS.set(Timeouts::from_config(store));
}

/// PostgreSQL's migrations, in order: version `n` is the first `n` applied.
const PG_MIGRATION_SQL: &[&str] = &[
    include_str!("../../schema/postgres/0001_store.sql"),
    include_str!("../../schema/postgres/0002_bulk_writes.sql"),
    include_str!("../../schema/postgres/0003_hook_bulk_upserts.sql"),
    include_str!("../../schema/postgres/0004_issued_ids.sql"),
    include_str!("../../schema/postgres/0005_builder_kept.sql"),
    include_str!("../../schema/postgres/0006_hook_role_limits.sql"),
    include_str!("../../schema/postgres/0007_receipt_start.sql"),
    include_str!("../../schema/postgres/0008_purge_records_only.sql"),
    include_str!("../../schema/postgres/0009_selective_prunes.sql"),
    include_str!("../../schema/postgres/0010_runs_by_builder_finish.sql"),
    include_str!("../../schema/postgres/0011_upserts_draw_no_ids.sql"),
    include_str!("../../schema/postgres/0012_rows_checked_by_the_server.sql"),
    include_str!("../../schema/postgres/0013_record_descriptions.sql"),
    include_str!("../../schema/postgres/0014_provenance_only_added.sql"),
];

/// The schema version this build writes on PostgreSQL.
pub fn pg_schema_version() -> usize {
    PG_MIGRATION_SQL.len()
}

/// The PostgreSQL URL `path` spells, if it is one.
pub(crate) fn postgres_url(path: &Path) -> Result<Option<PgUrl>, StoreError> {
    let Some(text) = path.to_str() else {
        return Ok(None);
    };
    match super::postgres::connect::classify(text) {
        Ok(Location::Postgres(url)) => Ok(Some(*url)),
        Ok(Location::File(_)) => Ok(None),
        Err(err) => Err(StoreError::Input(err.to_string())),
    }
}

impl Store {
    /// A PostgreSQL store, checked to hold a schema this build reads and writes.
    pub(super) fn open_postgres(url: &PgUrl, access: Access) -> Result<Self, StoreError> {
        let store = Self::connect_postgres(url, access)?;
        store.check_pg_schema()?;
        Ok(store)
    }

    fn connect_postgres(url: &PgUrl, access: Access) -> Result<Self, StoreError> {
        let label = PathBuf::from(url.redacted());
        let timeouts = TIMEOUTS.get().copied().unwrap_or_default();
        for warning in url.warnings() {
            eprintln!("warning: {warning}");
        }
        let client = super::postgres::connect::connect(url, &timeouts).map_err(|err| {
            StoreError::Unusable {
                path: label.clone(),
                reason: err.to_string(),
            }
        })?;
        Ok(Self {
            pg_url: Some(url.clone()),
            conn: Db::Postgres(Box::new(PgConn::new(client, statement_timeout(&timeouts)))),
            path: label,
            access,
            few_suspects: Default::default(),
            doubted_records: None,
        })
    }

    /// Connects again when a PostgreSQL store's connection is gone (the server restarted, or a
    /// proxy cut it): a long-lived process, the collector, goes on once the server is back.
    /// Nothing is lost with the old connection: every write commits before it answers.
    pub fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        let (Db::Postgres(conn), Some(url)) = (&self.conn, &self.pg_url) else {
            return Ok(());
        };
        if !conn.is_closed() {
            return Ok(());
        }
        let url = url.clone();
        let fresh = Self::connect_postgres(&url, self.access)?;
        fresh.check_pg_schema()?;
        self.conn = fresh.conn;
        Ok(())
    }

    /// A second connection reading this one's snapshot: `None` outside a repeatable-read
    /// transaction, or when the server takes no more connections (then this one reads alone).
    pub(super) fn pg_snapshot_reader(&self) -> Option<Db> {
        let url = self.pg_url.as_ref()?;
        let snapshot: String = self
            .conn
            .query_row("SELECT pg_export_snapshot()", [], |row| row.get(0))
            .ok()?;
        // An id such as `00000003-0000001B-1`; nothing else is spliced into the statement.
        if !snapshot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return None;
        }
        let timeouts = TIMEOUTS.get().copied().unwrap_or_default();
        let client = super::postgres::connect::connect(url, &timeouts).ok()?;
        let reader = Db::Postgres(Box::new(PgConn::new(client, String::new())));
        reader
            .execute_batch(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'; {}",
                statement_timeout(&timeouts)
            ))
            .ok()?;
        Some(reader)
    }

    /// `db migrate` on PostgreSQL: creates the schema in an empty database, or brings an
    /// older one up to date, in one transaction.
    pub(super) fn migrate_postgres(url: &PgUrl) -> Result<Migrated, StoreError> {
        let mut store = Self::connect_postgres(url, Access::Write)?;
        let latest = pg_schema_version();
        let path = store.path.clone();
        let tx = store
            .conn
            .transaction()
            .map_err(|e| super::sql_error(&path, e))?;
        let run = || -> Result<usize, DbError> {
            let (found, _) = pg_version(&tx)?;
            let from = usize::try_from(found).unwrap_or(usize::MAX);
            for sql in PG_MIGRATION_SQL.iter().take(latest).skip(from) {
                tx.execute_batch(sql)?;
            }
            if from < latest {
                tx.execute(
                    "UPDATE schema_version SET version = ?1, writable_by = ?2",
                    [latest, WRITABLE_BY],
                )?;
            }
            Ok(from)
        };
        let from = match run() {
            Ok(from) => from,
            Err(err) => {
                return Err(StoreError::Migrate {
                    path,
                    message: err.to_string(),
                });
            }
        };
        if from > latest {
            return Err(StoreError::Newer {
                path,
                found: from,
                supported: latest,
            });
        }
        // Read in the migration's transaction: shown by every `db migrate` from version 12 on.
        let collectors = if latest >= COLLECTORS_MARKED {
            tx.prepare(
                "SELECT DISTINCT r.rolname::text
                 FROM pg_proc p, aclexplode(p.proacl) a, pg_roles r
                 WHERE p.oid = 'cw_collects_receipts()'::regprocedure
                   AND a.privilege_type = 'EXECUTE' AND r.oid = a.grantee AND NOT r.rolsuper
                   AND has_table_privilege(r.oid, 'run_receipts'::regclass, 'INSERT')
                   AND NOT has_table_privilege(r.oid, 'run_receipts'::regclass, 'UPDATE')
                 ORDER BY 1",
            )
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .map_err(|e| super::sql_error(&path, e))?
        } else {
            Vec::new()
        };
        tx.commit().map_err(|e| super::sql_error(&path, e))?;
        Ok(Migrated {
            from,
            to: latest,
            collectors,
        })
    }

    fn check_pg_schema(&self) -> Result<(), StoreError> {
        let (found, writable_by) =
            pg_version_at_open(&self.conn).map_err(|e| super::sql_error(&self.path, e))?;
        let latest = pg_schema_version();
        let found_usize = usize::try_from(found).map_err(|_| StoreError::Corrupt {
            path: self.path.clone(),
            found,
        })?;
        if found_usize == 0 {
            return Err(StoreError::NoSchema {
                path: self.path.clone(),
            });
        }
        if found_usize < latest {
            return Err(StoreError::Older {
                path: self.path.clone(),
                found: found_usize,
                supported: latest,
            });
        }
        // A newer schema is used when the release that wrote it says this one may still:
        // its migrations only added what this build does not read.
        let compatible = usize::try_from(writable_by).is_ok_and(|oldest| oldest <= latest);
        if found_usize > latest && !compatible {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                found: found_usize,
                supported: latest,
            });
        }
        Ok(())
    }
}

/// The statement that bounds each statement of a transaction by `[store] statement_timeout`,
/// for that transaction alone.
fn statement_timeout(timeouts: &Timeouts) -> String {
    format!(
        "SET LOCAL statement_timeout = {}",
        timeouts.statement.as_millis()
    )
}

/// The schema version from which a role adds receipts only as a collector
/// (`cw_collects_receipts()`).
const COLLECTORS_MARKED: usize = 12;

/// The oldest schema version whose releases may still write a store at this build's version.
/// Raised only by a migration that is not additive.
const WRITABLE_BY: usize = 1;

/// The schema version stored and the oldest that may write it; `(0, 0)` in a database with
/// no cachewarden schema.
pub(super) fn pg_version(db: &Db) -> Result<(i64, i64), DbError> {
    let exists: bool = db.query_row(
        "SELECT to_regclass('schema_version') IS NOT NULL",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok((0, 0));
    }
    db.query_row(
        "SELECT version, writable_by FROM schema_version",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

/// [`pg_version`] in one round trip, for opening a store outside any transaction: the
/// common case, a schema there, is one query, and a database without one answers that the
/// table is missing.
fn pg_version_at_open(db: &Db) -> Result<(i64, i64), DbError> {
    match db.query_row(
        "SELECT version, writable_by FROM schema_version",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    ) {
        // undefined_table
        Err(err) if err.code().as_deref() == Some("42P01") => Ok((0, 0)),
        other => other,
    }
}

/// What a role may do with a PostgreSQL store: `cachewarden db grant NAME --role ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRole {
    /// The CI hooks: read everything, add provenance, change nothing.
    Hook,
    /// The collectors (`serve`): a hook that also adds the receipts of the runs it received
    /// and the refusals of those it did not.
    Collector,
    /// The responders: everything else (incidents, journals, sweeps, audits, imports).
    Responder,
}

/// Every table of the PostgreSQL schema (a test holds it to the schema's own list).
const TABLES: &[&str] = &[
    "pipelines",
    "builders",
    "runs",
    "artifacts",
    "artifact_tags",
    "mounts",
    "builder_records",
    "record_descriptions",
    "events",
    "purges",
    "purge_records",
    "incidents",
    "actions",
    "incident_digests",
    "containment_overrides",
    "verifications",
    "audit_manifests",
    "audit_tags",
    "audits",
    "audit_findings",
    "manifest_facts",
    "event_pages",
    "artifact_pages",
    "record_pages",
    "pipeline_changes",
    "run_observations",
    "event_details",
    "run_truncations",
    "acceptances",
    "run_build_refs",
    "build_history",
    "run_receipts",
    "collector_refusals",
    "run_chain",
    "mount_snapshots",
    "mount_snapshot_files",
    "step_events",
    "schema_version",
    "store_locks",
];

/// The views of the PostgreSQL schema, which both roles read.
const VIEWS: &[&str] = &["pipeline_current", "cw_identity_tables"];

/// The tables a hook adds rows to itself: a run with its events and observations, the
/// store's doubt of a run's times (a receipt; schema version 12 refuses any other from a
/// hook), the run chain, a containment override a user forced,
/// and a pipeline with its first project and ceiling (a trigger refuses any later change from
/// a role that may not update `pipeline_changes`). Builders, artifacts, tags, mounts and
/// builder records it adds through the `cw_upsert_*` functions; the packed pages through the
/// owner's triggers. Manifest facts, which `check` and purges trust, are the responders' to
/// learn.
const HOOK_INSERTS: &[&str] = &[
    "pipelines",
    "pipeline_changes",
    "runs",
    "events",
    "event_details",
    "run_observations",
    "run_truncations",
    "run_build_refs",
    "step_events",
    "run_receipts",
    "run_chain",
    "containment_overrides",
    "record_descriptions",
];

/// What a collector may add besides a hook's: refusals. (Both INSERT into `run_receipts`; the
/// store takes a collector's receipts, and of a hook's only its own doubt of a run the same
/// transaction adds, schema version 12. A role that may add refusals is a collector's.)
const COLLECTOR_INSERTS: &[&str] = &["collector_refusals"];

/// What a collector may execute besides a hook's: the mark the store knows collectors by.
const COLLECTOR_FUNCTIONS: &[&str] = &["cw_collects_receipts()"];

/// The functions a hook calls for the upserts it may not do as updates.
const HOOK_FUNCTIONS: &[&str] = &[
    "cw_upsert_builder(TEXT, TEXT, TEXT)",
    "cw_upsert_artifact(TEXT, TEXT, TEXT, TEXT, BIGINT)",
    "cw_upsert_artifact_tag(BIGINT, TEXT, BIGINT)",
    "cw_upsert_mount(BIGINT, TEXT, TEXT)",
    "cw_upsert_builder_record(BIGINT, TEXT, TEXT, TEXT, BIGINT, BIGINT, BIGINT)",
    "cw_upsert_artifacts(TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[])",
    "cw_upsert_builder_records(BIGINT[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[], BIGINT[])",
];

/// A role name as a quoted SQL identifier; refused when PostgreSQL could not take it as given
/// (empty, over 63 bytes, which it would truncate, or holding a NUL).
pub fn quote_role(name: &str) -> Result<String, StoreError> {
    quote_name("role", name)
}

/// A schema name as a quoted SQL identifier, held to the same rules as a role's.
fn quote_schema(name: &str) -> Result<String, StoreError> {
    quote_name("schema", name)
}

/// A name of a PostgreSQL `what` (role, schema) as a quoted SQL identifier, or the refusal.
fn quote_name(what: &str, name: &str) -> Result<String, StoreError> {
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(StoreError::Input(format!(
            "{what} name `{}` cannot be used: a PostgreSQL {what} name is 1 to 63 bytes with no \
             NUL",
            name.escape_debug()
        )));
    }
    Ok(super::db::quote_identifier(name))
}

/// The statements that give `role` what `kind` may do in the store's `schema`, after taking
/// back whatever it had there.
pub fn grant_sql(role: &str, kind: GrantRole, schema: &str) -> Result<Vec<String>, StoreError> {
    let role = quote_role(role)?;
    let schema = quote_schema(schema)?;
    // Every name is the schema's, whatever search path the statements run under.
    let names = |names: &[&str]| {
        names
            .iter()
            .map(|name| format!("{schema}.{name}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut sql = vec![
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}"),
        format!("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schema} FROM {role}"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
    ];
    match kind {
        GrantRole::Hook | GrantRole::Collector => {
            sql.push(format!(
                "GRANT SELECT ON {}, {} TO {role}",
                names(TABLES),
                names(VIEWS)
            ));
            let mut inserts = HOOK_INSERTS.to_vec();
            let mut functions = HOOK_FUNCTIONS.to_vec();
            if kind == GrantRole::Collector {
                inserts.extend(COLLECTOR_INSERTS);
                functions.extend(COLLECTOR_FUNCTIONS);
            }
            sql.push(format!("GRANT INSERT ON {} TO {role}", names(&inserts)));
            sql.push(format!(
                "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"
            ));
            for function in functions {
                sql.push(format!(
                    "GRANT EXECUTE ON FUNCTION {schema}.{function} TO {role}"
                ));
            }
        }
        GrantRole::Responder => {
            sql.push(format!("GRANT SELECT ON {} TO {role}", names(VIEWS)));
            sql.push(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {role}",
                names(TABLES)
            ));
            sql.push(format!(
                "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"
            ));
            sql.push(format!(
                "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role}"
            ));
        }
    }
    Ok(sql)
}

impl Store {
    /// Applies [`grant_sql`] to an existing role, in one transaction, as the schema's owner.
    pub fn grant(path: &Path, role: &str, kind: GrantRole) -> Result<(), StoreError> {
        let Some(url) = postgres_url(path)? else {
            return Err(StoreError::Input(
                "db grant: roles are PostgreSQL's; this store is an SQLite file".to_owned(),
            ));
        };
        quote_role(role)?;
        let mut store = Self::open_postgres(&url, Access::Write)?;
        let label = store.path.clone();
        let tx = store
            .conn
            .transaction()
            .map_err(|e| super::sql_error(&label, e))?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ?1)",
                [role],
                |row| row.get(0),
            )
            .map_err(|e| super::sql_error(&label, e))?;
        if !exists {
            return Err(StoreError::NotFound(format!(
                "no role `{}` in the database server: create it first (CREATE ROLE ... LOGIN)",
                role.escape_debug()
            )));
        }
        // The schema that holds the store's tables, as its connection finds them.
        let (creates, schema): (bool, String) = tx
            .query_row(
                "SELECT has_schema_privilege(?1, n.oid, 'CREATE'), n.nspname::text
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = 'runs'::regclass",
                [role],
                |row| row.try_into(),
            )
            .map_err(|e| super::sql_error(&label, e))?;
        // A role that may create objects in the store's schema could define functions the
        // owner's functions and triggers would call in its place.
        if kind != GrantRole::Responder && creates {
            return Err(StoreError::Input(format!(
                "role `{}` may create objects in schema `{}` (directly or through PUBLIC), so it \
                 could stand in for functions the store's triggers call: revoke it first \
                 (REVOKE CREATE ON SCHEMA {} FROM PUBLIC, {})",
                role.escape_debug(),
                schema.escape_debug(),
                quote_schema(&schema)?,
                quote_role(role)?,
            )));
        }
        let sql = grant_sql(role, kind, &schema)?;
        tx.execute_batch(&sql.join(";\n"))
            .map_err(|e| super::sql_error(&label, e))?;
        tx.commit().map_err(|e| super::sql_error(&label, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table list is the schema's: a new table cannot be left out of the grants.
    #[test]
    fn every_table_is_granted() {
        let schema: std::collections::BTreeSet<&str> = PG_MIGRATION_SQL
            .iter()
            .flat_map(|sql| sql.lines())
            .filter_map(|line| line.strip_prefix("CREATE TABLE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        let listed: std::collections::BTreeSet<&str> = TABLES.iter().copied().collect();
        assert_eq!(schema, listed);
        let views: std::collections::BTreeSet<&str> = PG_MIGRATION_SQL
            .iter()
            .flat_map(|sql| sql.lines())
            .filter_map(|line| line.strip_prefix("CREATE VIEW "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        assert_eq!(views, VIEWS.iter().copied().collect());
        assert!(
            HOOK_INSERTS
                .iter()
                .chain(COLLECTOR_INSERTS)
                .all(|t| listed.contains(t))
        );
        for never in [
            "incidents",
            "actions",
            "purges",
            "purge_records",
            "acceptances",
            "store_locks",
            "manifest_facts",
        ] {
            assert!(!HOOK_INSERTS.contains(&never), "{never}");
            assert!(!COLLECTOR_INSERTS.contains(&never), "{never}");
        }
    }

    /// Every table a hook appends to whose ids come from an identity refuses ids it did not
    /// hand out: a new such table cannot be left out.
    #[test]
    fn every_identity_a_hook_appends_to_checks_its_ids() {
        let mut table = "";
        let mut identities = std::collections::BTreeSet::new();
        for line in PG_MIGRATION_SQL.iter().flat_map(|sql| sql.lines()) {
            if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
                table = rest.split_whitespace().next().unwrap();
            } else if line.trim_start().starts_with("id ")
                && line.contains("GENERATED BY DEFAULT AS IDENTITY")
            {
                identities.insert(table);
            }
        }
        let checked: std::collections::BTreeSet<&str> = PG_MIGRATION_SQL
            .iter()
            .flat_map(|sql| sql.lines())
            .filter_map(|line| line.strip_prefix("CREATE TRIGGER "))
            .filter_map(|rest| {
                let (name, on) = rest.split_once(" AFTER INSERT ON ")?;
                let table = on.split_whitespace().next()?;
                (name == format!("{table}_have_issued_ids")).then_some(table)
            })
            .collect();
        let appended: std::collections::BTreeSet<&str> = HOOK_INSERTS
            .iter()
            .chain(COLLECTOR_INSERTS)
            .copied()
            .filter(|t| identities.contains(t))
            .collect();
        assert!(appended.contains("events") && appended.contains("runs"));
        assert_eq!(checked, appended);
    }

    /// A role name is always one quoted identifier, whatever it holds.
    #[test]
    fn role_names_are_quoted_never_spliced() {
        assert_eq!(quote_role("ci").unwrap(), "\"ci\"");
        assert_eq!(
            quote_role("x\"; DROP TABLE runs; --").unwrap(),
            "\"x\"\"; DROP TABLE runs; --\""
        );
        assert!(quote_role("").is_err());
        assert!(quote_role(&"a".repeat(64)).is_err());
        let hook = grant_sql("ci hook", GrantRole::Hook, "public")
            .unwrap()
            .join(";");
        assert!(hook.contains("TO \"ci hook\""));
        assert!(!hook.contains("UPDATE") && !hook.contains("DELETE"));
        let inserts = |sql: &str| {
            sql.split(';')
                .find(|statement| statement.starts_with("GRANT INSERT"))
                .unwrap()
                .to_owned()
        };
        assert!(!inserts(&hook).contains("collector_refusals"), "{hook}");
        assert!(!hook.contains("cw_collects_receipts"), "{hook}");
        let collector = grant_sql("c", GrantRole::Collector, "cw")
            .unwrap()
            .join(";");
        let added = inserts(&collector);
        assert!(added.contains("collector_refusals") && added.contains("run_receipts"));
        assert!(collector.contains("cw_collects_receipts()"), "{collector}");
        assert!(!collector.contains("UPDATE") && !collector.contains("DELETE"));
        assert!(collector.contains("IN SCHEMA \"cw\"") && !collector.contains("public"));
    }
}
