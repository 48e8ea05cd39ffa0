//! Comparing table contents: [`TableDigest`] and [`TableFingerprint`] of the pgbench tables,
//! and computing them with psql on a running cluster.

use std::fmt;
use std::path::Path;

use super::postgres::psql;
use super::{BarmanPrimary, PGBENCH_TABLES};

/// Row count and content digest of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub table: String,
    pub rows: u64,
    /// md5 (hex) of the concatenated md5s of the rows' text forms, sorted: independent of the
    /// physical row order, so equal for a cluster and its restored copy.
    pub md5: String,
}

/// The contents of the pgbench tables ([`PGBENCH_TABLES`]), to compare a cluster with a
/// restored copy of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFingerprint {
    pub tables: Vec<TableDigest>,
}

impl TableFingerprint {
    /// The digest of `table`, if covered.
    pub fn table(&self, table: &str) -> Option<&TableDigest> {
        self.tables.iter().find(|digest| digest.table == table)
    }
}

impl fmt::Display for TableFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, digest) in self.tables.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{}: {} rows md5 {}",
                digest.table, digest.rows, digest.md5
            )?;
        }
        Ok(())
    }
}

impl BarmanPrimary {
    /// Row counts and digests of the pgbench tables of the running primary. Panics on failure.
    pub fn table_fingerprint(&self) -> TableFingerprint {
        fingerprint(&self.pg_bin, &self.socket_directory(), self.port)
            .unwrap_or_else(|error| panic!("{error}\npostgres.log tail:\n{}", self.log_tail()))
    }
}

/// The fingerprint SQL: for each table, its row count and the md5 of its rows' md5s in sorted
/// order (rows rendered with ISO dates).
fn fingerprint_sql() -> String {
    PGBENCH_TABLES
        .iter()
        .enumerate()
        .map(|(index, table)| {
            format!(
                "SELECT {index} AS n, '{table}' AS t, count(*), \
                 md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), '')) \
                 FROM (SELECT md5(r::text) AS h FROM {table} r) rows"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
        + " ORDER BY n"
}

pub(super) fn fingerprint(
    pg_bin: &Path,
    socket: &Path,
    port: u16,
) -> Result<TableFingerprint, String> {
    let output = psql(
        pg_bin,
        socket,
        port,
        &[
            "SET datestyle = 'ISO, YMD'",
            "SET timezone = 'UTC'",
            "SET extra_float_digits = 3",
            &fingerprint_sql(),
        ],
    )?;
    let mut tables = Vec::new();
    for line in output.lines().filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split('|').collect();
        let [_, table, rows, md5] = fields.as_slice() else {
            return Err(format!("unexpected fingerprint line {line:?}"));
        };
        tables.push(TableDigest {
            table: (*table).to_owned(),
            rows: rows
                .parse()
                .map_err(|_| format!("unexpected row count in {line:?}"))?,
            md5: (*md5).to_owned(),
        });
    }
    if tables.len() != PGBENCH_TABLES.len() {
        return Err(format!("unexpected fingerprint output {output:?}"));
    }
    Ok(TableFingerprint { tables })
}
