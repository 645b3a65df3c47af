//! Expiry, the size bound, and durability across reopening, for the memory and SQLite
//! stores (Redis: tests/store.rs, against a real redis-server).

use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn limits(ttl_ms: u64, max: usize) -> Limits {
    Limits {
        delivery_ttl: Duration::from_millis(ttl_ms),
        max_records: max,
        report_ttl: Duration::from_millis(ttl_ms),
    }
}

/// The behaviour every backend shares.
async fn expiry_and_case(s: &dyn Store) {
    s.record_delivered("id:a", &rcpts(&["X@y"])).await.unwrap();
    assert_eq!(
        s.delivered("id:a", &rcpts(&["x@y", "z@y"])).await.unwrap(),
        vec![true, false],
        "case-insensitive recipients; others not delivered"
    );
    assert_eq!(
        s.delivered("id:b", &rcpts(&["x@y"])).await.unwrap(),
        vec![false]
    );
    let mut f = Fields::new();
    f.insert("envelope_from".into(), "a@b".into());
    s.put("imdn:1", &f, Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(s.get("imdn:1").await.unwrap(), Some(f.clone()));
    let l = s.lookup("id:a").await.unwrap();
    assert!(l.delivered.contains_key("x@y"), "{l:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.delivered("id:a", &rcpts(&["x@y"])).await.unwrap(),
        vec![false],
        "expired"
    );
    assert_eq!(s.get("imdn:1").await.unwrap(), None, "expired");
    let st = s.stats().await.unwrap();
    assert_eq!((st.delivery_records, st.correlation_records), (0, 0));
}

/// `claim`: one holder at a time, given back by `release`, free again after its time.
async fn claims(s: &dyn Store) {
    // Long enough for an fsync on a loaded machine; expiry is checked with 1 ms.
    let t = Duration::from_secs(30);
    assert!(s.claim("sending:imdn:x:dsn", t).await.unwrap());
    assert!(!s.claim("sending:imdn:x:dsn", t).await.unwrap());
    assert!(
        s.claim("sending:imdn:x:mdn", t).await.unwrap(),
        "another key"
    );
    s.release("sending:imdn:x:dsn").await.unwrap();
    assert!(s.claim("sending:imdn:x:dsn", t).await.unwrap(), "released");
    let short = Duration::from_millis(1);
    assert!(s.claim("sending:imdn:y:dsn", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(s.claim("sending:imdn:y:dsn", t).await.unwrap(), "expired");
}

#[tokio::test]
async fn claims_are_exclusive_until_released_or_expired() {
    claims(&MemoryStore::new(Limits::default(), crate::clock::system())).await;
    let dir = tempfile::tempdir().unwrap();
    claims(
        &SqliteStore::open(
            &dir.path().join("c.sqlite3"),
            Limits::default(),
            crate::clock::system(),
        )
        .unwrap(),
    )
    .await;
}

/// On tokio's paused clock: the TTLs pass without real sleeps.
#[tokio::test(start_paused = true)]
async fn memory_store_expires() {
    let clock = crate::clock::TokioClock::starting_at(crate::ids::fixed_now());
    expiry_and_case(&MemoryStore::new(limits(150, 100), Arc::new(clock))).await;
}

#[tokio::test]
async fn sqlite_store_expires_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s/iwf.sqlite3");
    let s = SqliteStore::open(&path, limits(150, 100), crate::clock::system()).unwrap();
    expiry_and_case(&s).await;
    s.sweep().await.unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = c
        .query_row("SELECT count(*) FROM delivered", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "swept");
}

#[tokio::test]
async fn sqlite_records_survive_reopening_and_concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iwf.sqlite3");
    {
        let s = std::sync::Arc::new(
            SqliteStore::open(&path, Limits::default(), crate::clock::system()).unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.record_delivered(&format!("id:{i}"), &rcpts(&["a@b", "c@d"]))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }
    let s = SqliteStore::open(&path, Limits::default(), crate::clock::system()).unwrap();
    for i in [0, 77, 199] {
        assert_eq!(
            s.delivered(&format!("id:{i}"), &rcpts(&["A@B", "c@d", "e@f"]))
                .await
                .unwrap(),
            vec![true, true, false]
        );
    }
    assert_eq!(s.stats().await.unwrap().delivery_records, 400);
}

#[tokio::test]
async fn sqlite_store_stays_bounded_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(
        &dir.path().join("b.sqlite3"),
        limits(3_600_000, 10),
        crate::clock::system(),
    )
    .unwrap();
    for i in 0..50 {
        s.record_delivered(&format!("id:{i}"), &rcpts(&["r@y"]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let n = s.stats().await.unwrap().delivery_records;
        assert!(n <= 10, "bounded after {i}: {n}");
    }
    assert_eq!(
        s.delivered("id:49", &rcpts(&["r@y"])).await.unwrap(),
        vec![true]
    );
    assert_eq!(
        s.delivered("id:0", &rcpts(&["r@y"])).await.unwrap(),
        vec![false]
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever is recorded, the memory store never holds more than its bound, and the
    /// record just written is always there.
    #[test]
    fn memory_store_is_bounded_and_keeps_the_latest(
        max in 1usize..20,
        writes in proptest::collection::vec((0u8..40, 0u8..4), 1..120),
    ) {
        let rt = runtime();
        let s = MemoryStore::new(limits(3_600_000, max), crate::clock::system());
        for (mail, rcpt) in writes {
            let (m, r) = (format!("id:{mail}"), vec![format!("r{rcpt}@x")]);
            rt.block_on(s.record_delivered(&m, &r)).unwrap();
            prop_assert!(s.len() <= max, "{} > {max}", s.len());
            prop_assert_eq!(rt.block_on(s.delivered(&m, &r)).unwrap(), vec![true]);
        }
    }

    /// A recorded recipient is delivered until the TTL passes, and only that recipient.
    #[test]
    fn memory_store_answers_exactly_what_was_recorded(
        recorded in proptest::collection::btree_set((0u8..10, 0u8..5), 0..30),
        asked in proptest::collection::vec((0u8..10, 0u8..5), 1..30),
    ) {
        let rt = runtime();
        let s = MemoryStore::new(limits(3_600_000, 1000), crate::clock::system());
        for (m, r) in &recorded {
            rt.block_on(s.record_delivered(&format!("id:{m}"), &[format!("R{r}@X")])).unwrap();
        }
        for (m, r) in asked {
            let got = rt.block_on(s.delivered(&format!("id:{m}"), &[format!("r{r}@x")])).unwrap();
            prop_assert_eq!(got, vec![recorded.contains(&(m, r))]);
        }
    }
}

#[test]
fn backends_parse_from_the_config_value() {
    let dir = std::path::Path::new("/var/lib/iwf");
    assert_eq!(Backend::parse("memory", dir), Ok(Backend::Memory));
    assert_eq!(
        Backend::parse("sqlite", dir),
        Ok(Backend::Sqlite(dir.join("iwf.sqlite3")))
    );
    assert_eq!(
        Backend::parse("redis://127.0.0.1:6379/0", dir),
        Ok(Backend::Redis {
            urls: vec!["redis://127.0.0.1:6379/0".into()],
            cluster: false
        })
    );
    assert_eq!(
        Backend::parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", dir),
        Ok(Backend::Redis {
            urls: vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ],
            cluster: true
        })
    );
    assert_eq!(
        Backend::parse("postgres://x", dir),
        Err(BackendError::Unknown("postgres://x".into()))
    );
    assert_eq!(
        Backend::parse("redis+cluster://", dir)
            .unwrap_err()
            .to_string(),
        "redis+cluster:// needs at least one host:port"
    );
}

#[test]
fn message_ids_never_contain_spaces() {
    assert_eq!(
        mail_identity("a@b", b"Message-ID: <a b@c>\r\n\r\nx"),
        "id:a_b@c"
    );
}
