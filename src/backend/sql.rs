//! SQL text shared by the backends: keyset pagination, pushed-down key filters, DDL pieces and
//! the checks that keep catalog-supplied type names from smuggling SQL.
//!
//! Values never enter SQL text: every builder takes a `ph` callback that records the value and
//! returns its placeholder (`?` or `CAST($n AS type)`), which the backend then binds.

use anyhow::{bail, Result};

use super::{KeyFilter, PkValues, TableSchema, Value};
use crate::ident::{is_plain_identifier, Dialect};

/// Records `value` (to be bound as a value of SQL type `ty`) and returns its placeholder.
pub(crate) type Ph<'a> = dyn FnMut(Value, &str) -> String + 'a;

/// The placeholder of dialects that number nothing (`?`: MariaDB, SQLite): each value is
/// pushed onto `vals`, to be bound in order.
pub(crate) fn question_marks(vals: &mut Vec<Value>) -> impl FnMut(Value, &str) -> String + '_ {
    |v, _| {
        vals.push(v);
        "?".to_string()
    }
}

/// The page query of `read_range` for the dialects with `?` placeholders: `select` (a select
/// list) of the rows in `(after, upto]` passing `filter`, in primary-key order, at most `limit`;
/// and the values it binds.
pub(crate) fn range_select(
    d: Dialect,
    schema: &TableSchema,
    key_column: &str,
    (after, upto): (Option<&PkValues>, Option<&PkValues>),
    filter: &KeyFilter,
    limit: usize,
    select: &str,
) -> Result<(String, Vec<Value>)> {
    check_table(&schema.name)?;
    let mut vals = Vec::new();
    let w = where_clause_range(
        d,
        schema,
        key_column,
        after,
        upto,
        filter,
        &mut question_marks(&mut vals),
    )?;
    let q = format!(
        "SELECT {select} FROM {} WHERE {w} ORDER BY {} LIMIT {limit}",
        d.quote(&schema.name),
        pk_list(d, schema),
    );
    Ok((q, vals))
}

/// Table names come from plans and maps: untrusted. They are quoted anyway; this refuses early
/// and names the problem.
pub(crate) fn check_table(table: &str) -> Result<()> {
    if !is_plain_identifier(table) {
        bail!("table name {table:?} is not a plain identifier (letters, digits, _)");
    }
    Ok(())
}

/// Type names come from the database's own catalog, but they are spliced into DDL and casts, so
/// they are held to a conservative character set. MySQL `enum(...)`/`set(...)` carry quoted
/// literals, checked to be well formed (quotes doubled, no backslash).
pub(crate) fn check_type(ty: &str) -> Result<()> {
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '(' | ')' | ',' | '_'))
    };
    let lower = ty.to_ascii_lowercase();
    for prefix in ["enum(", "set("] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            if let Some(body) = rest.strip_suffix(')') {
                if quoted_list_ok(body) {
                    return Ok(());
                }
            }
        }
    }
    // PostgreSQL array types end in `[]` (possibly repeated).
    let mut base = ty;
    while let Some(b) = base.strip_suffix("[]") {
        base = b;
    }
    if ty.len() > 200 || !plain(base) {
        bail!("column type {ty:?} has characters reshard does not accept in a type name");
    }
    Ok(())
}

fn quoted_list_ok(body: &str) -> bool {
    let b = body.as_bytes();
    let mut i = 0;
    loop {
        if b.get(i) != Some(&b'\'') {
            return false;
        }
        i += 1;
        loop {
            match b.get(i) {
                None => return false,
                Some(b'\\') => return false,
                Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
        match b.get(i) {
            None => return true,
            Some(b',') => i += 1,
            Some(_) => return false,
        }
    }
}

pub(crate) fn column_list(d: Dialect, schema: &TableSchema) -> String {
    schema
        .columns
        .iter()
        .map(|c| d.quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn pk_list(d: Dialect, schema: &TableSchema) -> String {
    schema
        .primary_key
        .iter()
        .map(|c| d.quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_type<'a>(schema: &'a TableSchema, name: &str) -> Result<&'a str> {
    match schema.columns.iter().find(|c| c.name == name) {
        Some(c) => Ok(&c.data_type),
        None => bail!("table {} has no column {name:?}", schema.name),
    }
}

/// `CREATE TABLE` with columns, NOT NULL, defaults and primary key.
pub(crate) fn create_table_sql(d: Dialect, schema: &TableSchema) -> Result<String> {
    check_table(&schema.name)?;
    if schema.primary_key.is_empty() {
        bail!("table {} has no primary key", schema.name);
    }
    let mut parts = Vec::new();
    for c in &schema.columns {
        check_type(&c.data_type)?;
        let mut p = format!("{} {}", d.quote(&c.name), c.data_type);
        if !c.nullable {
            p.push_str(" NOT NULL");
        }
        if let Some(def) = &c.default {
            // The expression as the source database reported it for this same dialect.
            p.push_str(" DEFAULT ");
            p.push_str(def);
        }
        parts.push(p);
    }
    parts.push(format!("PRIMARY KEY ({})", pk_list(d, schema)));
    Ok(format!(
        "CREATE TABLE {} ({})",
        d.quote(&schema.name),
        parts.join(", ")
    ))
}

#[allow(dead_code)] // the unbounded form, kept for callers that need no upper bound
/// `WHERE` clause (without the keyword; `1=1` when nothing restricts) for keyset pagination after
/// `after` plus the pushed-down key filter.
pub(crate) fn where_clause(
    d: Dialect,
    schema: &TableSchema,
    key_column: &str,
    after: Option<&PkValues>,
    filter: &KeyFilter,
    ph: &mut Ph<'_>,
) -> Result<String> {
    where_clause_range(d, schema, key_column, after, None, filter, ph)
}

/// Like [`where_clause`], with an inclusive upper bound on the primary key as well: the rows of
/// the primary-key range `(after, upto]`.
pub(crate) fn where_clause_range(
    d: Dialect,
    schema: &TableSchema,
    key_column: &str,
    after: Option<&PkValues>,
    upto: Option<&PkValues>,
    filter: &KeyFilter,
    ph: &mut Ph<'_>,
) -> Result<String> {
    let mut conds = Vec::new();
    if let Some(after) = after {
        conds.push(keyset(d, schema, after, ph)?);
    }
    if let Some(upto) = upto {
        conds.push(keyset_upto(d, schema, upto, ph)?);
    }
    if let Some(f) = filter_sql(d, schema, key_column, filter, ph)? {
        conds.push(f);
    }
    Ok(if conds.is_empty() {
        "1=1".to_string()
    } else {
        conds.join(" AND ")
    })
}

/// Which side of a primary-key bound a keyset predicate selects.
#[derive(Clone, Copy)]
enum Side {
    /// `pk > bound`: the rows after a cursor.
    After,
    /// `pk <= bound`: the rows up to and including an upper bound.
    UpTo,
}

fn keyset(d: Dialect, schema: &TableSchema, after: &PkValues, ph: &mut Ph<'_>) -> Result<String> {
    keyset_bound(d, schema, after, Side::After, ph)
}

fn keyset_upto(
    d: Dialect,
    schema: &TableSchema,
    upto: &PkValues,
    ph: &mut Ph<'_>,
) -> Result<String> {
    keyset_bound(d, schema, upto, Side::UpTo, ph)
}

/// `pk > bound` or `pk <= bound` in primary-key order.
fn keyset_bound(
    d: Dialect,
    schema: &TableSchema,
    bound: &PkValues,
    side: Side,
    ph: &mut Ph<'_>,
) -> Result<String> {
    // (operator of the whole comparison, leading-column range, strict per-column step)
    let (whole, lead, strict, what) = match side {
        Side::After => (">", ">=", ">", "cursor"),
        Side::UpTo => ("<=", "<=", "<", "upper bound"),
    };
    let pk = &schema.primary_key;
    if bound.len() != pk.len() {
        bail!(
            "{what} for table {} has {} values, its primary key {} columns",
            schema.name,
            bound.len(),
            pk.len()
        );
    }
    let types: Vec<&str> = pk
        .iter()
        .map(|c| column_type(schema, c))
        .collect::<Result<_>>()?;
    if pk.len() == 1 {
        return Ok(format!(
            "{} {whole} {}",
            d.quote(&pk[0]),
            ph(bound[0].clone(), types[0])
        ));
    }
    match d {
        // Row-value comparison: one index range on PostgreSQL and SQLite.
        Dialect::Postgres | Dialect::Sqlite => {
            let vals: Vec<String> = bound
                .iter()
                .zip(&types)
                .map(|(v, t)| ph(v.clone(), t))
                .collect();
            Ok(format!(
                "({}) {whole} ({})",
                pk_list(d, schema),
                vals.join(", ")
            ))
        }
        // MariaDB does not turn row-value comparisons into index ranges, so spell it out:
        // a >= x AND (a > x OR (a = x AND (b > y OR ...))) (mirrored for an upper bound). The
        // leading a >= x gives the optimizer a range even where it gives up on the OR.
        Dialect::Mysql => {
            // Placeholders are positional: values are recorded in textual order.
            let first = format!(
                "{} {lead} {}",
                d.quote(&pk[0]),
                ph(bound[0].clone(), types[0])
            );
            let ops = (whole, strict);
            fn nest(
                d: Dialect,
                pk: &[String],
                types: &[&str],
                bound: &PkValues,
                i: usize,
                ops: (&str, &str),
                ph: &mut Ph<'_>,
            ) -> String {
                let col = d.quote(&pk[i]);
                if i + 1 == pk.len() {
                    return format!("{col} {} {}", ops.0, ph(bound[i].clone(), types[i]));
                }
                let step = format!("{col} {} {}", ops.1, ph(bound[i].clone(), types[i]));
                let eq = format!("{col} = {}", ph(bound[i].clone(), types[i]));
                let rest = nest(d, pk, types, bound, i + 1, ops, ph);
                format!("({step} OR ({eq} AND {rest}))")
            }
            let expr = nest(d, pk, &types, bound, 0, ops, ph);
            Ok(format!("{first} AND {expr}"))
        }
    }
}

pub(crate) fn filter_sql(
    d: Dialect,
    schema: &TableSchema,
    key_column: &str,
    filter: &KeyFilter,
    ph: &mut Ph<'_>,
) -> Result<Option<String>> {
    let ty = column_type(schema, key_column)?;
    let k = d.quote(key_column);
    match filter {
        KeyFilter::All => Ok(None),
        KeyFilter::Ranges(ranges) => {
            if ranges.is_empty() {
                return Ok(Some("1=0".into()));
            }
            let mut alts = Vec::new();
            for (from, to) in ranges {
                let mut c = Vec::new();
                if let Some(b) = from {
                    c.push(format!("{k} >= {}", ph(b.into(), ty)));
                }
                if let Some(b) = to {
                    c.push(format!("{k} < {}", ph(b.into(), ty)));
                }
                if c.is_empty() {
                    return Ok(None);
                }
                alts.push(format!("({})", c.join(" AND ")));
            }
            Ok(Some(format!("({})", alts.join(" OR "))))
        }
        KeyFilter::Residues { modulus, residues } => {
            if residues.is_empty() {
                return Ok(Some("1=0".into()));
            }
            let m = i64::try_from(*modulus)
                .ok()
                .filter(|m| *m > 0)
                .ok_or_else(|| anyhow::anyhow!("modulus {modulus} out of range"))?;
            // Placeholders are positional: values are recorded in textual order.
            let m1 = ph(Value::Int(m), "bigint");
            let m2 = ph(Value::Int(m), "bigint");
            let m3 = ph(Value::Int(m), "bigint");
            let mut rs = Vec::new();
            for r in residues {
                let r =
                    i64::try_from(*r).map_err(|_| anyhow::anyhow!("residue {r} out of range"))?;
                rs.push(ph(Value::Int(r), "bigint"));
            }
            Ok(Some(format!(
                "(((({k} % {m1}) + {m2}) % {m3}) IN ({}))",
                rs.join(", ")
            )))
        }
    }
}

/// Rows of one upsert statement: below the placeholder limit (`max_params`) and `max_rows`.
pub(crate) fn chunk_rows(ncols: usize, max_params: usize, max_rows: usize) -> usize {
    (max_params / ncols.max(1)).clamp(1, max_rows)
}

/// `(?, ?, ...)` groups for a multi-row VALUES list of `nrows` rows.
pub(crate) fn values_groups(nrows: usize, ncols: usize) -> String {
    let one = format!("({})", vec!["?"; ncols].join(", "));
    vec![one; nrows].join(", ")
}

pub(crate) fn key_of(
    schema: &TableSchema,
    key_idx: usize,
    row: &[Value],
) -> Result<crate::map::Key> {
    match row.get(key_idx) {
        Some(v) => key_from(schema, key_idx, v),
        None => bail!("table {}: a row without its shard key column", schema.name),
    }
}

/// The shard key held by `v`, the value of column `key_idx`.
pub(crate) fn key_from(schema: &TableSchema, key_idx: usize, v: &Value) -> Result<crate::map::Key> {
    match v.as_key() {
        Some(k) => Ok(k),
        None => bail!(
            "table {}: shard key column {} holds a value that is not an integer or text: {v:?}",
            schema.name,
            schema.columns[key_idx].name,
        ),
    }
}

pub(crate) fn key_index(schema: &TableSchema, key_column: &str) -> Result<usize> {
    schema
        .column_index(key_column)
        .ok_or_else(|| anyhow::anyhow!("table {} has no column {key_column:?}", schema.name))
}

pub(crate) fn pk_indexes(schema: &TableSchema) -> Result<Vec<usize>> {
    schema
        .primary_key
        .iter()
        .map(|c| key_index(schema, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Column;

    fn schema() -> TableSchema {
        let col = |n: &str, t: &str| Column {
            name: n.into(),
            data_type: t.into(),
            nullable: false,
            default: None,
        };
        TableSchema {
            name: "t".into(),
            columns: vec![col("a", "bigint"), col("b", "text"), col("k", "bigint")],
            primary_key: vec!["a".into(), "b".into()],
            indexes: vec![],
        }
    }

    #[test]
    fn type_names_are_checked() {
        for ok in [
            "bigint",
            "numeric(12,3)",
            "character varying(40)",
            "bigint(20) unsigned",
            "enum('a','it''s')",
            "set('x')",
            "integer[]",
            "text[][]",
            "",
        ] {
            assert!(check_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "int; drop table x",
            "text default 'x'",
            "enum('a\\'')",
            "enum('a') , b int",
            "int--",
            "int[]; drop",
            "int[1]",
        ] {
            assert!(check_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keyset_and_filters_bind_every_value() {
        let s = schema();
        let mut args = Vec::new();
        let mut ph = |v: Value, _t: &str| {
            args.push(v);
            "?".to_string()
        };
        let three = vec![Value::Int(1), Value::Int(2), Value::Int(3)];
        let mut s3 = schema();
        s3.primary_key = vec!["a".into(), "b".into(), "k".into()];
        let mut seen = Vec::new();
        let mut numbered = |v: Value, _t: &str| {
            seen.push(v);
            format!("{:?}", seen.last().unwrap())
        };
        let w = keyset(Dialect::Mysql, &s3, &three, &mut numbered).unwrap();
        assert_eq!(
            w,
            "`a` >= Int(1) AND (`a` > Int(1) OR (`a` = Int(1) AND \
             (`b` > Int(2) OR (`b` = Int(2) AND `k` > Int(3)))))"
        );
        let after = vec![Value::Int(5), Value::Text("x".into())];
        let w = where_clause(
            Dialect::Mysql,
            &s,
            "k",
            Some(&after),
            &KeyFilter::Residues {
                modulus: 4,
                residues: vec![1, 3],
            },
            &mut ph,
        )
        .unwrap();
        assert_eq!(
            w,
            "`a` >= ? AND (`a` > ? OR (`a` = ? AND `b` > ?)) AND \
             ((((`k` % ?) + ?) % ?) IN (?, ?))"
        );
        assert_eq!(args.len(), 9);
        let mut n = 0;
        let mut ph = |_v: Value, t: &str| {
            n += 1;
            format!("CAST(${n} AS {t})")
        };
        let w = where_clause(
            Dialect::Postgres,
            &s,
            "k",
            Some(&after),
            &KeyFilter::Ranges(vec![(None, Some(crate::map::Bound::Int(10)))]),
            &mut ph,
        )
        .unwrap();
        assert_eq!(
            w,
            "(\"a\", \"b\") > (CAST($1 AS bigint), CAST($2 AS text)) AND \
             ((\"k\" < CAST($3 AS bigint)))"
        );
    }

    #[test]
    fn empty_filters_match_nothing() {
        let s = schema();
        let mut ph = |_v: Value, _t: &str| "?".to_string();
        let w = filter_sql(
            Dialect::Sqlite,
            &s,
            "k",
            &KeyFilter::Ranges(vec![]),
            &mut ph,
        );
        assert_eq!(w.unwrap().as_deref(), Some("1=0"));
    }
}
