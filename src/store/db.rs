//! One connection to a store, SQLite or PostgreSQL, behind the subset of rusqlite's API the
//! store uses: the store's queries are written once.
//!
//! SQL text is shared where the two dialects agree. For PostgreSQL, `?N` and `?` placeholders
//! are rewritten to `$N` once per statement, and each statement runs unnamed, in one round
//! trip, leaving nothing in the server's session (see [`PgConn`]). Values cross as four kinds,
//! as SQLite has them: integers (i64, booleans as 0 and 1), reals, text and bytes; text never
//! holds a NUL ([`DbError::Nul`]). A PostgreSQL column of another type (`numeric`, `json`) is read as an error
//! that names it: such queries cast in SQL.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The server's message in one line (the error is not also a source: it would repeat it).
    #[error("{}", pg_message(.0))]
    Postgres(postgres::Error),
    /// `query_row` found no row.
    #[error("query returned no rows")]
    NoRows,
    /// A column or parameter of a type the store does not read or write there.
    #[error("column {index}: {message}")]
    Type { index: usize, message: String },
    /// A value the store itself refuses (bad UTF-8, an out-of-range integer, an unknown kind).
    #[error("{0}")]
    Value(String),
    /// Text holding a NUL character, which PostgreSQL's text cannot: refused on both engines
    /// before the statement runs, so the two stores never differ on it. The edges name the
    /// field first (`import`, `record`, the collector); this is the last word.
    #[error("a value holds a NUL character (U+0000), which the store does not keep")]
    Nul,
}

/// A PostgreSQL error in one line: the server's message (with its detail), else the client's.
fn pg_message(err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_owned(),
        },
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

impl DbError {
    /// Whether the store was busy (SQLite's lock, PostgreSQL's lock timeout or serialization
    /// failure): the caller may try again.
    pub fn is_busy(&self) -> bool {
        match self {
            Self::Sqlite(err) => matches!(
                err.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Self::Postgres(err) => err.code().is_some_and(|code| {
                matches!(
                    code.code(),
                    // lock_not_available, serialization_failure, deadlock_detected
                    "55P03" | "40001" | "40P01"
                )
            }),
            _ => false,
        }
    }

    /// Whether the server is gone: the connection closed or could not be made.
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Postgres(err) => {
                err.is_closed()
                    || err.as_db_error().is_none() && err.code().is_none()
                    || err.code().is_some_and(|code| {
                        code.code().starts_with("08") || code.code().starts_with("57P")
                    })
            }
            _ => false,
        }
    }

    /// The SQLSTATE of a PostgreSQL error, or SQLite's extended code as text.
    pub fn code(&self) -> Option<String> {
        match self {
            Self::Postgres(err) => err.code().map(|c| c.code().to_owned()),
            Self::Sqlite(err) => err.sqlite_error_code().map(|c| format!("{c:?}")),
            _ => None,
        }
    }
}

impl From<postgres::Error> for DbError {
    fn from(err: postgres::Error) -> Self {
        Self::Postgres(err)
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// `Ok(None)` for a query that found no row.
pub trait OptionalExtension<T> {
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExtension<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(DbError::NoRows) => Ok(None),
            Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A value bound to a statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A value read from a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> ValueRef<'a> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Int(_) => "integer",
            Self::Real(_) => "real",
            Self::Text(_) => "text",
            Self::Blob(_) => "bytes",
        }
    }

    pub fn as_str(&self) -> DbResult<&'a str> {
        match *self {
            Self::Text(text) => Ok(text),
            other => Err(DbError::Value(format!(
                "expected text, found {}",
                other.kind()
            ))),
        }
    }

    pub fn as_bytes(&self) -> DbResult<&'a [u8]> {
        match *self {
            Self::Text(text) => Ok(text.as_bytes()),
            Self::Blob(bytes) => Ok(bytes),
            other => Err(DbError::Value(format!(
                "expected text or bytes, found {}",
                other.kind()
            ))),
        }
    }

    pub fn as_blob(&self) -> DbResult<&'a [u8]> {
        match *self {
            Self::Blob(bytes) => Ok(bytes),
            other => Err(DbError::Value(format!(
                "expected bytes, found {}",
                other.kind()
            ))),
        }
    }

    pub fn as_i64(&self) -> DbResult<i64> {
        match *self {
            Self::Int(value) => Ok(value),
            other => Err(DbError::Value(format!(
                "expected an integer, found {}",
                other.kind()
            ))),
        }
    }
}

/// A Rust value that binds as a statement parameter.
pub trait ToValue {
    fn to_value(&self) -> DbResult<Value<'_>>;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> DbResult<Value<'_>> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> DbResult<Value<'_>> {
        match self {
            Some(value) => value.to_value(),
            None => Ok(Value::Null),
        }
    }
}

impl ToValue for Value<'_> {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(Value::Text(self))
    }
}

impl ToValue for String {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(Value::Text(self))
    }
}

impl ToValue for compact_str::CompactString {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(Value::Text(self))
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(Value::Blob(self))
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(Value::Blob(self))
    }
}

impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(Value::Blob(self))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(Value::Int(i64::from(*self)))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> DbResult<Value<'_>> {
        Ok(Value::Real(*self))
    }
}

macro_rules! int_to_value {
    ($($ty:ty),*) => {$(
        impl ToValue for $ty {
            fn to_value(&self) -> DbResult<Value<'_>> {
                i64::try_from(*self)
                    .map(Value::Int)
                    .map_err(|_| DbError::Value(format!("{self} does not fit a 64-bit integer")))
            }
        }
    )*};
}
int_to_value!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

/// `values`, unless one is text holding a NUL ([`DbError::Nul`]).
fn no_nul(values: Vec<Value<'_>>) -> DbResult<Vec<Value<'_>>> {
    if values
        .iter()
        .any(|v| matches!(v, Value::Text(text) if text.as_bytes().contains(&0)))
    {
        return Err(DbError::Nul);
    }
    Ok(values)
}

/// The parameters of one statement.
pub trait Params {
    fn values(&self) -> DbResult<Vec<Value<'_>>>;
}

impl Params for [&dyn ToValue; 0] {
    fn values(&self) -> DbResult<Vec<Value<'_>>> {
        Ok(Vec::new())
    }
}

impl<T: ToValue> Params for [T] {
    fn values(&self) -> DbResult<Vec<Value<'_>>> {
        self.iter().map(ToValue::to_value).collect()
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(&self) -> DbResult<Vec<Value<'_>>> {
                self.iter().map(ToValue::to_value).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// Parameters from an iterator, as many as it yields.
pub struct ParamsFromIter<T>(Vec<T>);

pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I::Item>
where
    I: IntoIterator,
    I::Item: ToValue,
{
    ParamsFromIter(iter.into_iter().collect())
}

impl<T: ToValue> Params for ParamsFromIter<T> {
    fn values(&self) -> DbResult<Vec<Value<'_>>> {
        self.0.iter().map(ToValue::to_value).collect()
    }
}

impl<T: ToValue> Params for Vec<T> {
    fn values(&self) -> DbResult<Vec<Value<'_>>> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl<P: Params + ?Sized> Params for &P {
    fn values(&self) -> DbResult<Vec<Value<'_>>> {
        (**self).values()
    }
}

/// `params![a, b]`: a statement's parameters, each anything [`ToValue`].
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::db::ToValue]
    };
    ($($value:expr),+ $(,)?) => {
        &[$(&$value as &dyn $crate::store::db::ToValue),+] as &[&dyn $crate::store::db::ToValue]
    };
}
pub(crate) use params;

/// A Rust value read from a column.
pub trait FromValue: Sized {
    fn from_value(value: ValueRef<'_>) -> DbResult<Self>;
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: ValueRef<'_>) -> DbResult<Self> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl FromValue for String {
    fn from_value(value: ValueRef<'_>) -> DbResult<Self> {
        value.as_str().map(str::to_owned)
    }
}

impl FromValue for compact_str::CompactString {
    fn from_value(value: ValueRef<'_>) -> DbResult<Self> {
        value.as_str().map(Into::into)
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: ValueRef<'_>) -> DbResult<Self> {
        value.as_bytes().map(<[u8]>::to_vec)
    }
}

impl FromValue for bool {
    fn from_value(value: ValueRef<'_>) -> DbResult<Self> {
        value.as_i64().map(|v| v != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: ValueRef<'_>) -> DbResult<Self> {
        match value {
            ValueRef::Real(v) => Ok(v),
            #[allow(clippy::cast_precision_loss)]
            ValueRef::Int(v) => Ok(v as f64),
            other => Err(DbError::Value(format!(
                "expected a real, found {}",
                other.kind()
            ))),
        }
    }
}

impl FromValue for serde_json::Value {
    fn from_value(value: ValueRef<'_>) -> DbResult<Self> {
        serde_json::from_str(value.as_str()?).map_err(|err| DbError::Value(err.to_string()))
    }
}

macro_rules! int_from_value {
    ($($ty:ty),*) => {$(
        impl FromValue for $ty {
            fn from_value(value: ValueRef<'_>) -> DbResult<Self> {
                let v = value.as_i64()?;
                <$ty>::try_from(v).map_err(|_| {
                    DbError::Value(format!("{v} is out of range for {}", stringify!($ty)))
                })
            }
        }
    )*};
}
int_from_value!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

/// A column, by position or by name.
pub trait RowIndex {
    fn index(&self, row: &Row<'_>) -> DbResult<usize>;
}

impl RowIndex for usize {
    fn index(&self, row: &Row<'_>) -> DbResult<usize> {
        if *self < row.len() {
            Ok(*self)
        } else {
            Err(DbError::Type {
                index: *self,
                message: format!("no such column (the row has {})", row.len()),
            })
        }
    }
}

impl RowIndex for &str {
    fn index(&self, row: &Row<'_>) -> DbResult<usize> {
        let found = match row {
            Row::Sqlite(r) => r.as_ref().column_index(self).ok(),
            Row::Postgres(r) => r.columns().iter().position(|c| c.name() == *self),
        };
        found.ok_or_else(|| DbError::Value(format!("no column named `{self}`")))
    }
}

/// One row of a result.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a postgres::Row),
}

impl Row<'_> {
    pub fn len(&self) -> usize {
        match self {
            Self::Sqlite(r) => r.as_ref().column_count(),
            Self::Postgres(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get<I: RowIndex, T: FromValue>(&self, index: I) -> DbResult<T> {
        let index = index.index(self)?;
        let value = self.get_ref(index)?;
        T::from_value(value).map_err(|err| match err {
            DbError::Value(message) => DbError::Type { index, message },
            other => other,
        })
    }

    pub fn get_ref(&self, index: usize) -> DbResult<ValueRef<'_>> {
        match self {
            Self::Sqlite(r) => Ok(match r.get_ref(index)? {
                rusqlite::types::ValueRef::Null => ValueRef::Null,
                rusqlite::types::ValueRef::Integer(v) => ValueRef::Int(v),
                rusqlite::types::ValueRef::Real(v) => ValueRef::Real(v),
                rusqlite::types::ValueRef::Text(bytes) => {
                    ValueRef::Text(std::str::from_utf8(bytes).map_err(|err| DbError::Type {
                        index,
                        message: err.to_string(),
                    })?)
                }
                rusqlite::types::ValueRef::Blob(bytes) => ValueRef::Blob(bytes),
            }),
            Self::Postgres(r) => pg_value(r, index),
        }
    }
}

macro_rules! tuple_from_row {
    ($($name:ident $index:tt),+) => {
        impl<$($name: FromValue),+> TryFrom<&Row<'_>> for ($($name,)+) {
            type Error = DbError;

            fn try_from(row: &Row<'_>) -> DbResult<Self> {
                Ok(($(row.get::<usize, $name>($index)?,)+))
            }
        }
    };
}
tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// A PostgreSQL column as one of SQLite's kinds.
fn pg_value(row: &postgres::Row, index: usize) -> DbResult<ValueRef<'_>> {
    use postgres::types::Type;
    let ty = row
        .columns()
        .get(index)
        .map(|c| c.type_().clone())
        .ok_or_else(|| DbError::Type {
            index,
            message: "no such column".to_owned(),
        })?;
    let value = if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(index)?.map(ValueRef::Int)
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(index)?
            .map(|v| ValueRef::Int(v.into()))
    } else if ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(index)?
            .map(|v| ValueRef::Int(v.into()))
    } else if ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(index)?
            .map(|v| ValueRef::Int(v.into()))
    } else if ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(index)?.map(ValueRef::Real)
    } else if ty == Type::FLOAT4 {
        row.try_get::<_, Option<f32>>(index)?
            .map(|v| ValueRef::Real(v.into()))
    } else if ty == Type::TEXT || ty == Type::VARCHAR || ty == Type::NAME || ty == Type::BPCHAR {
        row.try_get::<_, Option<&str>>(index)?.map(ValueRef::Text)
    } else if ty == Type::BYTEA {
        row.try_get::<_, Option<&[u8]>>(index)?.map(ValueRef::Blob)
    } else {
        return Err(DbError::Type {
            index,
            message: format!("PostgreSQL type `{ty}` is not read by the store: cast it in SQL"),
        });
    };
    Ok(value.unwrap_or(ValueRef::Null))
}

/// A connection to a store.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConn>),
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite(_) => "Db::Sqlite",
            Self::Postgres(_) => "Db::Postgres",
        })
    }
}

/// Runs `f`, which blocks on the `postgres` client's own runtime, outside the caller's: the
/// commands run their store calls from async code.
pub fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        Ok(_) => std::thread::scope(|scope| {
            scope
                .spawn(f)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
        Err(_) => f(),
    }
}

/// The advisory lock every PostgreSQL write transaction holds (`cachewarden` in ASCII, less
/// its last byte).
pub const WRITER_LOCK: i64 = 0x0063_6163_6865_7761;

/// A PostgreSQL connection. It keeps no state in the server's session: each statement goes
/// as one unnamed statement (parse, bind and execute in one round trip), and settings are
/// `SET LOCAL`, so it works the same behind a transaction-pooling proxy such as PgBouncer,
/// where consecutive transactions may run on different server connections.
pub struct PgConn {
    client: RefCell<Option<postgres::Client>>,
    /// Each statement's text as PostgreSQL spells it, rewritten once (client-side only).
    texts: RefCell<HashMap<String, std::sync::Arc<str>>>,
    /// `SET LOCAL` statements run at the start of every transaction (statement timeouts): kept
    /// per transaction, not per session, so that a transaction-pooling proxy sees no session
    /// state.
    per_transaction: String,
}

impl PgConn {
    pub fn new(client: postgres::Client, per_transaction: String) -> Self {
        Self {
            client: RefCell::new(Some(client)),
            texts: RefCell::new(HashMap::new()),
            per_transaction,
        }
    }

    /// Whether the connection is gone: the server closed it, or it broke.
    pub fn is_closed(&self) -> bool {
        self.client
            .borrow()
            .as_ref()
            .is_none_or(postgres::Client::is_closed)
    }

    /// Runs `f` on the client, outside any async runtime of the caller's.
    pub fn with_client<T: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> DbResult<T> {
        let mut slot = self.client.borrow_mut();
        let client = slot
            .as_mut()
            .expect("the client is there until the connection drops");
        Ok(blocking(|| f(client))?)
    }

    fn text(&self, sql: &str) -> std::sync::Arc<str> {
        if let Some(text) = self.texts.borrow().get(sql) {
            return text.clone();
        }
        let text: std::sync::Arc<str> = pg_sql(sql).into();
        self.texts.borrow_mut().insert(sql.to_owned(), text.clone());
        text
    }

    /// Runs `f` with the statement's PostgreSQL text and its parameters, each with the type
    /// it is sent as (see [`pg_param_type`]); names the statement on stderr when PostgreSQL
    /// refuses it and `CACHEWARDEN_DEBUG_SQL` is set.
    fn run<T: Send>(
        &self,
        sql: &str,
        values: &[Value<'_>],
        f: impl FnOnce(
            &mut postgres::Client,
            &str,
            Vec<(&(dyn postgres::types::ToSql + Sync), postgres::types::Type)>,
        ) -> Result<T, postgres::Error>
        + Send,
    ) -> DbResult<T> {
        let text = self.text(sql);
        let params: Vec<(&(dyn postgres::types::ToSql + Sync), postgres::types::Type)> = values
            .iter()
            .map(|v| (v as &(dyn postgres::types::ToSql + Sync), pg_param_type(v)))
            .collect();
        let statement: &str = &text;
        self.with_client(|client| f(client, statement, params))
            .inspect_err(|err| {
                if std::env::var_os("CACHEWARDEN_DEBUG_SQL").is_some() {
                    eprintln!("cachewarden: PostgreSQL refused ({err}): {statement}");
                }
            })
    }

    fn query(&self, sql: &str, values: &[Value<'_>]) -> DbResult<Vec<postgres::Row>> {
        self.run(sql, values, |client, text, params| {
            client.query_typed(text, &params)
        })
    }

    fn execute(&self, sql: &str, values: &[Value<'_>]) -> DbResult<usize> {
        let count = self.run(sql, values, |client, text, params| {
            use postgres::fallible_iterator::FallibleIterator;
            let mut rows = client.query_typed_raw(text, params)?;
            while rows.next()?.is_some() {}
            Ok(rows.rows_affected().unwrap_or(0))
        })?;
        usize::try_from(count).map_err(|_| DbError::Value(format!("{count} rows")))
    }

    /// Starts a write transaction holding the store's writer lock, as SQLite's `BEGIN
    /// IMMEDIATE` does: writers take turns, so ids are handed out in commit order and the run
    /// chain is appended to by one writer at a time. The lock is the transaction's own (no
    /// session state), released when it ends, by a killed client too. One round trip.
    ///
    /// Read committed whatever the server's default: each statement then sees what the
    /// writer before committed, as the writes count on. A snapshot taken for the whole
    /// transaction would be taken before the lock is granted.
    fn begin(&self) -> DbResult<()> {
        let mut sql = String::from("BEGIN ISOLATION LEVEL READ COMMITTED; ");
        if !self.per_transaction.is_empty() {
            sql.push_str(&self.per_transaction);
            sql.push_str("; ");
        }
        sql.push_str(&format!("SELECT pg_advisory_xact_lock({WRITER_LOCK})"));
        match self.with_client(|client| client.batch_execute(&sql)) {
            // Of the batch only the wait for the lock can run out of time: say who holds it.
            // (A cancel, by a DBA or a watchdog, has the same code and another message.)
            Err(DbError::Postgres(err))
                if err.code() == Some(&postgres::error::SqlState::QUERY_CANCELED)
                    && err
                        .as_db_error()
                        .is_some_and(|db| db.message().contains("statement timeout")) =>
            {
                let holder = self.writer_lock_holder();
                Err(DbError::Value(format!(
                    "{}: waited that long for the store's writer lock{holder}",
                    pg_message(&err)
                )))
            }
            other => other,
        }
    }

    /// Who holds the writer lock, as a clause for a message: the server process, its role
    /// and application (values a client chose: escaped as names are, and cut), what it is
    /// doing and since when (shown to its own role and to readers of all statistics); empty
    /// when the lock is free again or cannot be read. Ends the failed transaction.
    fn writer_lock_holder(&self) -> String {
        let (class, object) = (WRITER_LOCK >> 32, WRITER_LOCK & 0xffff_ffff);
        let sql = format!(
            "ROLLBACK; SELECT l.pid::text, coalesce(a.usename::text, ''),
                    coalesce(a.application_name, ''), coalesce(a.state, ''),
                    coalesce(to_char(a.state_change AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {class}
               AND l.objid = {object} AND l.objsubid = 1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             LIMIT 1"
        );
        let rows = match self.with_client(|client| client.simple_query(&sql)) {
            Ok(rows) => rows,
            Err(_) => return String::new(),
        };
        let Some(row) = rows.iter().find_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        }) else {
            return String::new();
        };
        let [pid, role, application, state, since] = [0, 1, 2, 3, 4].map(|i| {
            let cut: String = row.get(i).unwrap_or_default().chars().take(64).collect();
            crate::report::escape::Term(&cut).to_string()
        });
        let mut clause = format!(", held by server process {pid} (role `{role}`");
        if !application.is_empty() {
            clause.push_str(&format!(", application `{application}`"));
        }
        if !state.is_empty() {
            clause.push_str(&format!(", {state} since {since}"));
        }
        clause.push_str(
            "): a long write, or a session holding it idle (stop it with \
             `SELECT pg_terminate_backend(PID)` as a superuser or its role)",
        );
        clause
    }

    /// Starts a read-only transaction on one snapshot, with the statement timeout. One round
    /// trip.
    fn begin_read(&self) -> DbResult<()> {
        let mut sql = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        if !self.per_transaction.is_empty() {
            sql.push_str("; ");
            sql.push_str(&self.per_transaction);
        }
        self.with_client(|client| client.batch_execute(&sql))
    }
}

/// The type a parameter is sent as. Bytes are `bytea`; every other value goes untyped (OID 0)
/// in text form, so the server infers its type from the statement, as it would for a
/// prepared statement: an integer binds to an `int4` argument, a `boolean` column or a `float8`
/// as well as to a `bigint`, and text to `jsonb`.
fn pg_param_type(value: &Value<'_>) -> postgres::types::Type {
    use postgres::types::{Kind, Type};
    match value {
        Value::Blob(_) => Type::BYTEA,
        _ => Type::new(
            "unspecified".to_owned(),
            0,
            Kind::Pseudo,
            "pg_catalog".to_owned(),
        ),
    }
}

impl Drop for PgConn {
    /// The client closes its connection on its own runtime: outside the caller's.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            blocking(|| drop(client));
        }
    }
}

impl postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("cannot bind {self:?} to a PostgreSQL `{ty}` parameter").into()
        };
        if ty.oid() == 0 {
            // Untyped, in text form (see `encode_format`): the server parses it as the type it
            // inferred.
            match *self {
                Value::Null => return Ok(IsNull::Yes),
                Value::Int(v) => out.extend_from_slice(v.to_string().as_bytes()),
                Value::Real(v) => out.extend_from_slice(real_text(v).as_bytes()),
                Value::Text(v) => out.extend_from_slice(v.as_bytes()),
                Value::Blob(_) => return Err(mismatch()),
            }
            return Ok(IsNull::No);
        }
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => {
                if *ty == Type::INT8 {
                    v.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(v).map_err(|_| mismatch())?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(v).map_err(|_| mismatch())?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (v != 0).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    #[allow(clippy::cast_precision_loss)]
                    (v as f64).to_sql(ty, out)
                } else {
                    Err(mismatch())
                }
            }
            Value::Real(v) => {
                if *ty == Type::FLOAT8 {
                    v.to_sql(ty, out)
                } else {
                    Err(mismatch())
                }
            }
            Value::Text(v) => {
                if *ty == Type::TEXT
                    || *ty == Type::VARCHAR
                    || *ty == Type::NAME
                    || *ty == Type::BPCHAR
                    || *ty == Type::UNKNOWN
                {
                    v.to_sql(ty, out)
                } else if *ty == Type::JSONB || *ty == Type::JSON {
                    // json and jsonb take the text as it is (jsonb's binary form is a version
                    // byte, then the text).
                    if *ty == Type::JSONB {
                        out.extend_from_slice(&[1]);
                    }
                    out.extend_from_slice(v.as_bytes());
                    Ok(IsNull::No)
                } else {
                    Err(mismatch())
                }
            }
            Value::Blob(v) => {
                if *ty == Type::BYTEA {
                    v.to_sql(ty, out)
                } else {
                    Err(mismatch())
                }
            }
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    /// Text for an untyped parameter, binary for a typed one (bytes, and `COPY`'s columns).
    fn encode_format(&self, ty: &postgres::types::Type) -> postgres::types::Format {
        if ty.oid() == 0 {
            postgres::types::Format::Text
        } else {
            postgres::types::Format::Binary
        }
    }

    postgres::types::to_sql_checked!();
}

/// A float in PostgreSQL's text form, read back as the same value.
fn real_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        // Rust's shortest form that reads back as the same f64.
        format!("{v:?}")
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as R};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => R::Null,
            Value::Int(v) => R::Integer(v),
            Value::Real(v) => R::Real(v),
            Value::Text(v) => R::Text(v.as_bytes()),
            Value::Blob(v) => R::Blob(v),
        }))
    }
}

/// `name` as a quoted SQL identifier, the same on both engines: in double quotes, each double
/// quote in it doubled.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `sql` with SQLite's `?N` and `?` placeholders written as PostgreSQL's `$N` (string
/// literals, quoted identifiers and comments are left as they are), and the spellings of
/// [`DIALECT`] as PostgreSQL's.
pub fn pg_sql(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut i = 0;
    let mut start = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'?' => {
                out.push_str(&sql[start..i]);
                i += 1;
                let digits = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                if i > digits {
                    out.push('$');
                    out.push_str(&sql[digits..i]);
                } else {
                    out.push_str(&format!("${next}"));
                }
                next += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[start.min(sql.len())..]);
    for (sqlite, postgres) in DIALECT {
        if out.contains(sqlite) {
            out = out.replace(sqlite, postgres);
        }
    }
    out
}

/// The few spellings the two dialects do not share, as the store's queries use them.
const DIALECT: &[(&str, &str)] = &[
    // The separator of packed tag lists.
    ("char(31)", "chr(31)"),
    // SQLite's join-order hint, always with an `ON` in the store's queries, which
    // PostgreSQL's CROSS JOIN does not take.
    ("CROSS JOIN", "JOIN"),
];

impl Db {
    pub fn engine(&self) -> Engine {
        match self {
            Self::Sqlite(_) => Engine::Sqlite,
            Self::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, the write-ahead log).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Self::Sqlite(conn) => Some(conn),
            Self::Postgres(_) => None,
        }
    }

    pub fn execute(&self, sql: &str, params: impl Params) -> DbResult<usize> {
        let values = no_nul(params.values()?)?;
        match self {
            Self::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(values.iter()))?),
            Self::Postgres(conn) => conn.execute(sql, &values),
        }
    }

    pub fn execute_batch(&self, sql: &str) -> DbResult<()> {
        match self {
            Self::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Self::Postgres(conn) => conn.with_client(|client| client.batch_execute(sql)),
        }
    }

    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Reads the rows of a query one at a time as they arrive, until `f` says to stop
    /// (`Ok(false)`): a query of many large rows is never held whole, and on PostgreSQL the
    /// rows still on their way are read while the first are handled. Whether `f` stopped.
    pub fn each_row(
        &self,
        sql: &str,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> DbResult<bool> + Send,
    ) -> DbResult<bool> {
        let values = no_nul(params.values()?)?;
        match self {
            Self::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                while let Some(row) = rows.next()? {
                    if !f(&Row::Sqlite(row))? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Self::Postgres(conn) => {
                let mut failed = None;
                let stopped = conn.run(sql, &values, |client, text, params| {
                    use postgres::fallible_iterator::FallibleIterator;
                    let mut rows = client.query_typed_raw(text, params)?;
                    while let Some(row) = rows.next()? {
                        match f(&Row::Postgres(&row)) {
                            Ok(true) => {}
                            Ok(false) => return Ok(true),
                            Err(err) => {
                                failed = Some(err);
                                return Ok(true);
                            }
                        }
                    }
                    Ok(false)
                })?;
                failed.map_or(Ok(stopped), Err)
            }
        }
    }

    pub fn prepare_cached(&self, sql: &str) -> DbResult<Statement<'_>> {
        match self {
            Self::Sqlite(conn) => Ok(Statement::Sqlite(conn.prepare_cached(sql)?)),
            Self::Postgres(conn) => Ok(Statement::Postgres {
                conn,
                sql: sql.to_owned(),
            }),
        }
    }

    pub fn prepare(&self, sql: &str) -> DbResult<Statement<'_>> {
        self.prepare_cached(sql)
    }

    /// Starts a transaction: SQLite's takes the write lock at once (`BEGIN IMMEDIATE`).
    pub fn transaction(&mut self) -> DbResult<Transaction<'_>> {
        match self {
            Self::Sqlite(conn) => conn.execute_batch("BEGIN IMMEDIATE")?,
            Self::Postgres(conn) => conn.begin()?,
        }
        Ok(Transaction {
            db: self,
            done: false,
        })
    }

    /// Starts a read transaction: one snapshot for every statement in it.
    pub fn read_transaction(&self) -> DbResult<()> {
        match self {
            Self::Sqlite(conn) => Ok(conn.execute_batch("BEGIN DEFERRED")?),
            Self::Postgres(conn) => conn.begin_read(),
        }
    }
}

/// A transaction, rolled back when dropped uncommitted.
pub struct Transaction<'a> {
    db: &'a mut Db,
    done: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> DbResult<()> {
        self.done = true;
        self.db.execute_batch("COMMIT")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.db.execute_batch("ROLLBACK");
        }
    }
}

/// A statement ready to run.
pub enum Statement<'conn> {
    Sqlite(rusqlite::CachedStatement<'conn>),
    Postgres { conn: &'conn PgConn, sql: String },
}

impl Statement<'_> {
    pub fn execute(&mut self, params: impl Params) -> DbResult<usize> {
        let values = no_nul(params.values()?)?;
        match self {
            Self::Sqlite(stmt) => Ok(stmt.execute(rusqlite::params_from_iter(values.iter()))?),
            Self::Postgres { conn, sql } => conn.execute(sql, &values),
        }
    }

    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        let values = no_nul(params.values()?)?;
        match self {
            Self::Sqlite(stmt) => {
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                match rows.next()? {
                    Some(row) => f(&Row::Sqlite(row)),
                    None => Err(DbError::NoRows),
                }
            }
            Self::Postgres { conn, sql } => {
                let rows = conn.query(sql, &values)?;
                match rows.first() {
                    Some(row) => f(&Row::Postgres(row)),
                    None => Err(DbError::NoRows),
                }
            }
        }
    }

    pub fn query(&mut self, params: impl Params) -> DbResult<Rows<'_>> {
        let values = no_nul(params.values()?)?;
        match self {
            Self::Sqlite(stmt) => Ok(Rows::Sqlite(
                stmt.query(rusqlite::params_from_iter(values.iter()))?,
            )),
            Self::Postgres { conn, sql } => Ok(Rows::Postgres {
                rows: conn.query(sql, &values)?.into_iter(),
                current: None,
            }),
        }
    }

    pub fn query_map<T, F>(&mut self, params: impl Params, f: F) -> DbResult<MappedRows<'_, F>>
    where
        F: FnMut(&Row<'_>) -> DbResult<T>,
    {
        Ok(MappedRows {
            rows: self.query(params)?,
            f,
        })
    }
}

/// The rows of a query, one at a time.
pub enum Rows<'stmt> {
    Sqlite(rusqlite::Rows<'stmt>),
    Postgres {
        rows: std::vec::IntoIter<postgres::Row>,
        current: Option<postgres::Row>,
    },
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> DbResult<Option<Row<'_>>> {
        match self {
            Self::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Self::Postgres { rows, current } => {
                *current = rows.next();
                Ok(current.as_ref().map(Row::Postgres))
            }
        }
    }
}

/// The rows of a query, each read by a closure.
pub struct MappedRows<'stmt, F> {
    rows: Rows<'stmt>,
    f: F,
}

impl<T, F> Iterator for MappedRows<'_, F>
where
    F: FnMut(&Row<'_>) -> DbResult<T>,
{
    type Item = DbResult<T>;

    fn next(&mut self) -> Option<DbResult<T>> {
        match self.rows.next() {
            Ok(Some(row)) => Some((self.f)(&row)),
            Ok(None) => None,
            Err(err) => Some(Err(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placeholders become PostgreSQL's; text that only looks like one is left alone.
    #[test]
    fn placeholders_are_rewritten_outside_literals() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?3' -- ?4\n AND e = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?3' -- ?4\n AND e = $3"
        );
        assert_eq!(
            pg_sql(r#"SELECT "?x" /* ? */, ?"#),
            r#"SELECT "?x" /* ? */, $1"#
        );
    }

    /// Values read back as they were written, through the shared API, on SQLite.
    #[test]
    fn sqlite_round_trip() {
        let mut db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.execute_batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB)")
            .unwrap();
        let tx = db.transaction().unwrap();
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            params![7_i64, "x", vec![1_u8, 2]],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            params![None::<i64>, "y", None::<Vec<u8>>],
        )
        .unwrap();
        tx.commit().unwrap();
        let rows: Vec<(Option<i64>, String, Option<Vec<u8>>)> = db
            .prepare_cached("SELECT i, s, b FROM t ORDER BY s")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get("s")?, row.get(2)?)))
            .unwrap()
            .collect::<DbResult<_>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (Some(7), "x".into(), Some(vec![1, 2])),
                (None, "y".into(), None)
            ]
        );
        let missing = db
            .query_row("SELECT i FROM t WHERE s = ?1", ["z"], |row| {
                row.get::<_, i64>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(missing, None);
    }

    /// A transaction dropped uncommitted leaves nothing behind.
    #[test]
    fn dropped_transactions_roll_back() {
        let mut db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.execute_batch("CREATE TABLE t (i INTEGER)").unwrap();
        {
            let tx = db.transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (1)", params![]).unwrap();
        }
        let count: i64 = db
            .query_row("SELECT count(*) FROM t", params![], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 0);
    }

    /// Text holding a NUL is refused before anything is written, whatever the engine: the
    /// edges name the field first, and this keeps the two stores from ever differing on it.
    #[test]
    fn text_with_a_nul_is_refused_before_it_is_written() {
        let mut db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.execute_batch("CREATE TABLE t (s TEXT)").unwrap();
        let tx = db.transaction().unwrap();
        let err = tx
            .execute("INSERT INTO t VALUES (?1)", params!["a\0b"])
            .unwrap_err();
        assert!(matches!(err, DbError::Nul), "{err}");
        tx.commit().unwrap();
        let count: i64 = db
            .query_row("SELECT count(*) FROM t", params![], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 0);
        assert!(matches!(
            db.query_row("SELECT s FROM t WHERE s = ?1", ["\0"], |row| row
                .get::<_, String>(0)),
            Err(DbError::Nul)
        ));
    }

    /// A float sent as text reads back as the same float in PostgreSQL's input syntax.
    #[test]
    fn reals_are_sent_as_text_that_reads_back_exactly() {
        for v in [0.1, -2.5e-300, 1e300, f64::MAX, f64::MIN_POSITIVE, 3.0] {
            assert_eq!(real_text(v).parse::<f64>().unwrap(), v);
        }
        assert_eq!(real_text(f64::NAN), "NaN");
        assert_eq!(real_text(f64::INFINITY), "Infinity");
        assert_eq!(real_text(f64::NEG_INFINITY), "-Infinity");
    }
}
