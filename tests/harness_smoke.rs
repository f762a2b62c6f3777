mod common;

use common::db::{Kind, TestDb};

#[test]
fn each_backend_creates_queries_and_drops_a_database() {
    for kind in Kind::ALL {
        let Some(db) = TestDb::create(kind, "smoke") else {
            continue;
        };
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)");
        db.exec("INSERT INTO t VALUES (1, 'a'), (2, NULL)");
        let rows = db.query("SELECT id, s FROM t ORDER BY id");
        assert_eq!(rows, vec![vec!["1", "a"], vec!["2", "NULL"]], "{kind:?}");
        let name = db.name.clone();
        drop(db);
        if kind != Kind::Sqlite {
            let admin = TestDb::create(kind, "smoke_check").unwrap();
            let q = match kind {
                Kind::Postgres => {
                    format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")
                }
                _ => format!(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{name}'"
                ),
            };
            assert_eq!(admin.scalar(&q), "0", "{kind:?}: {name} was not dropped");
        }
    }
}
