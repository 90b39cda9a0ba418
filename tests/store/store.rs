//! The state store's behaviour, run against both backends: every test here exists twice,
//! `NAME::sqlite` (a temporary file) and `NAME::postgres` (a database of its own on the cluster
//! in `FLOWHQ_TEST_PG_URL`).

#![allow(clippy::unwrap_used)]

use flowhq::config::{Language, TenantId, TenantSpec};
use flowhq::store::{
    Direction, Inserted, Lifecycle, NewEvent, NewMessage, SessionState, Store, TenantRecord,
    WorkerRecord, WorkerStatus,
};
use jiff::{SignedDuration, Timestamp};

use crate::support::{self, records};

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn spec(tenant: &str, business_name: &str) -> TenantSpec {
    records::spec(tenant, business_name)
}

fn tenant_record(tenant: &str, now: Timestamp) -> TenantRecord {
    records::tenant_record(spec(tenant, &format!("Business {tenant}")), now)
}

fn worker_record(tenant: &str, now: Timestamp) -> WorkerRecord {
    WorkerRecord {
        start_time: Some(1_234_567_890_123),
        restarts: 3,
        last_exit_code: Some(1),
        last_error: Some("exited with status 1".to_owned()),
        spec_hash: Some(spec(tenant, &format!("Business {tenant}")).hash()),
        ..records::running_worker(&id(tenant), now)
    }
}

/// An event with no revision and no detail.
fn event(
    tenant: Option<TenantId>,
    at: Timestamp,
    kind: &str,
    reason: impl Into<String>,
) -> NewEvent {
    NewEvent {
        tenant,
        at,
        kind: kind.to_owned(),
        reason: reason.into(),
        revision: None,
        detail: None,
    }
}

fn message(tenant: &str, direction: Direction, wa_id: Option<&str>, when: Timestamp) -> NewMessage {
    NewMessage {
        tenant: id(tenant),
        direction,
        chat: "255700000001@c.us".to_owned(),
        from: "255700000001@c.us".to_owned(),
        to: "255712345678@c.us".to_owned(),
        body: format!("hello {}", wa_id.unwrap_or("-")),
        wa_message_id: wa_id.map(str::to_owned),
        created_at: when,
    }
}

async fn seed_tenant(store: &Store, tenant: &str) {
    store
        .upsert_tenant(&tenant_record(tenant, at("2026-11-28T10:00:00Z")))
        .await
        .unwrap();
}

store_test!(migrating_twice_is_harmless, |store| {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(store.tenants().await.unwrap().is_empty());
    assert!(store.snapshot().await.unwrap().is_empty());
});

/// A database created before the `business_name` column (migrations 1 and 2 only, with a
/// tenant row written then) gets the column filled from each spec when it is migrated, so
/// the status shows the same names after an upgrade.
async fn an_upgrade_fills_business_names_from_the_specs(db: support::TestDb) {
    const OLD_ROW: &str = "INSERT INTO tenants (id, spec, spec_hash, revision, source_file, \
         lifecycle, created_at, updated_at) VALUES ('old', $1, 'h', 'r1', \
         'tenants.d/old.toml', 'active', 1, 1)";
    let spec = serde_json::to_string(&spec("old", "Duka la Zamani")).unwrap();
    if db.url().starts_with("sqlite:") {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(db.url())
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run_to(2, &pool)
            .await
            .unwrap();
        sqlx::query(OLD_ROW)
            .bind(&spec)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        sqlx::migrate!("./migrations/postgres")
            .run_to(2, &pool)
            .await
            .unwrap();
        sqlx::query(OLD_ROW)
            .bind(sqlx::types::Json(
                serde_json::from_str::<serde_json::Value>(&spec).unwrap(),
            ))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let store = db.store().await;
    let rows = store.snapshot().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].tenant.business_name, "Duka la Zamani");
    // And a later write keeps the column with the spec.
    let mut record = tenant_record("old", at("2026-11-28T10:00:00Z"));
    record.spec.business_name = "Duka Jipya".to_owned();
    record.spec_hash = record.spec.hash();
    store.upsert_tenant(&record).await.unwrap();
    assert_eq!(
        store.snapshot().await.unwrap()[0].tenant.business_name,
        "Duka Jipya"
    );
}

backend_test!(an_upgrade_fills_business_names_from_the_specs, |db| {
    an_upgrade_fills_business_names_from_the_specs(db).await;
});

store_test!(backend_name_follows_the_url, |store, db| {
    let expected = if db.url().starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgresql"
    };
    assert_eq!(store.backend_name(), expected);
});

store_test!(tenants_round_trip_with_their_spec, |store| {
    let t0 = at("2026-11-28T10:00:00.123Z");
    let mut record = tenant_record("mama-asha", t0);
    record.spec.hours = None;
    record.spec.replies.insert(
        Language::Sw,
        [(
            flowhq::config::tenant::ReplyKey::Menu,
            "Karibu {business}".to_owned(),
        )]
        .into(),
    );
    record.spec_hash = record.spec.hash();
    store.upsert_tenant(&record).await.unwrap();
    store
        .upsert_tenant(&tenant_record("acme", t0))
        .await
        .unwrap();

    assert_eq!(
        store.tenant(&id("mama-asha")).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(store.tenant(&id("nobody")).await.unwrap(), None);
    let all = store.tenants().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["acme", "mama-asha"]);

    // A second upsert replaces the spec but keeps created_at.
    let t1 = at("2026-11-28T11:00:00Z");
    let mut changed = tenant_record("mama-asha", t1);
    changed.spec.business_name = "Mama Asha Salon".to_owned();
    changed.spec_hash = changed.spec.hash();
    changed.revision = "e5f6a7b".to_owned();
    store.upsert_tenant(&changed).await.unwrap();
    let read = store.tenant(&id("mama-asha")).await.unwrap().unwrap();
    assert_eq!(read.created_at, t0);
    assert_eq!(read.updated_at, t1);
    assert_eq!(read.spec.business_name, "Mama Asha Salon");
    assert_eq!(read.spec_hash, changed.spec.hash());
    assert_eq!(read.revision, "e5f6a7b");
});

store_test!(
    a_batch_of_tenants_is_written_together_keeping_created_at,
    |store| {
        let t0 = at("2026-11-28T10:00:00Z");
        store
            .upsert_tenant(&tenant_record("acme", t0))
            .await
            .unwrap();
        store.upsert_tenants(&[]).await.unwrap();
        let t1 = at("2026-11-28T11:00:00Z");
        let mut acme = tenant_record("acme", t1);
        acme.spec.business_name = "Acme Ltd".to_owned();
        acme.spec_hash = acme.spec.hash();
        let batch: Vec<TenantRecord> = std::iter::once(acme)
            .chain((0..50).map(|i| tenant_record(&format!("t{i:02}"), t1)))
            .collect();
        store.upsert_tenants(&batch).await.unwrap();
        let all = store.tenants().await.unwrap();
        assert_eq!(all.len(), 51);
        let read = store.tenant(&id("acme")).await.unwrap().unwrap();
        assert_eq!(read.created_at, t0);
        assert_eq!(read.updated_at, t1);
        assert_eq!(read.spec.business_name, "Acme Ltd");
        assert_eq!(
            store.tenant(&id("t49")).await.unwrap(),
            Some(batch[50].clone())
        );
    }
);

store_test!(
    a_new_revision_is_recorded_on_unchanged_tenants_in_one_statement,
    |store| {
        let t0 = at("2026-11-28T10:00:00Z");
        let batch: Vec<TenantRecord> = (0..40)
            .map(|i| tenant_record(&format!("t{i:02}"), t0))
            .collect();
        store.upsert_tenants(&batch).await.unwrap();
        let t1 = at("2026-11-28T11:00:00Z");
        store
            .set_config_error(
                &id("t05"),
                Some("t05.toml:1:1: error: bad"),
                Some("bad0001"),
                t1,
            )
            .await
            .unwrap();
        assert_eq!(store.set_revision(&[], "c0ffee1", t1).await.unwrap(), 0);

        let moved: Vec<TenantId> = (0..30).map(|i| id(&format!("t{i:02}"))).collect();
        let t2 = at("2026-11-28T12:00:00Z");
        let mut with_unknown = moved.clone();
        with_unknown.push(id("nobody"));
        assert_eq!(
            store
                .set_revision(&with_unknown, "c0ffee1", t2)
                .await
                .unwrap(),
            30
        );
        for record in store.tenants().await.unwrap() {
            let n: usize = record.id.as_str()[1..].parse().unwrap();
            if n < 30 {
                assert_eq!(record.revision, "c0ffee1", "{}", record.id);
                assert_eq!(record.updated_at, t2);
                assert_eq!(record.config_error, None);
                assert_eq!(record.attempted_revision, None);
            } else {
                assert_eq!(record.revision, batch[n].revision, "{}", record.id);
                assert_eq!(record.updated_at, t0);
            }
            // Everything else is the spec as it was written.
            assert_eq!(record.spec, batch[n].spec);
            assert_eq!(record.spec_hash, batch[n].spec_hash);
            assert_eq!(record.created_at, t0);
        }
    }
);

store_test!(config_errors_are_recorded_and_cleared, |store| {
    seed_tenant(&store, "acme").await;
    let t1 = at("2026-11-28T12:00:00Z");
    let error = "tenants.d/acme.toml:3:1: error: unknown field `bussiness_name`";
    assert!(
        store
            .set_config_error(&id("acme"), Some(error), Some("bad0001"), t1)
            .await
            .unwrap()
    );
    let read = store.tenant(&id("acme")).await.unwrap().unwrap();
    assert_eq!(read.config_error.as_deref(), Some(error));
    assert_eq!(read.attempted_revision.as_deref(), Some("bad0001"));
    assert_eq!(read.revision, "a1b2c3d", "the applied revision is kept");
    assert_eq!(read.updated_at, t1);

    assert!(
        store
            .set_config_error(&id("acme"), None, None, t1)
            .await
            .unwrap()
    );
    let read = store.tenant(&id("acme")).await.unwrap().unwrap();
    assert_eq!(read.config_error, None);
    assert!(
        !store
            .set_config_error(&id("never-valid"), Some(error), None, t1)
            .await
            .unwrap(),
        "a tenant without a row reports false"
    );
});

store_test!(
    retiring_stamps_retired_at_and_reactivating_clears_it,
    |store| {
        seed_tenant(&store, "acme").await;
        let t1 = at("2026-11-28T12:00:00Z");
        let t2 = at("2026-11-28T13:00:00Z");
        assert!(store.retire_tenant(&id("acme"), t1).await.unwrap());
        assert!(store.retire_tenant(&id("acme"), t2).await.unwrap());
        let read = store.tenant(&id("acme")).await.unwrap().unwrap();
        assert_eq!(read.lifecycle, Lifecycle::Retired);
        assert_eq!(
            read.retired_at,
            Some(t1),
            "retiring again keeps the first stamp"
        );
        assert_eq!(read.updated_at, t2);

        assert!(
            store
                .set_lifecycle(&id("acme"), Lifecycle::Paused, t2)
                .await
                .unwrap()
        );
        let read = store.tenant(&id("acme")).await.unwrap().unwrap();
        assert_eq!(read.lifecycle, Lifecycle::Paused);
        assert_eq!(read.retired_at, None);
        assert!(
            !store
                .set_lifecycle(&id("ghost"), Lifecycle::Active, t2)
                .await
                .unwrap()
        );
    }
);

store_test!(workers_round_trip_and_are_deleted, |store| {
    seed_tenant(&store, "acme").await;
    seed_tenant(&store, "beta").await;
    let now = at("2026-11-28T10:05:00Z");
    let mut worker = worker_record("acme", now);
    store.upsert_worker(&worker).await.unwrap();
    assert_eq!(
        store.worker(&id("acme")).await.unwrap(),
        Some(worker.clone())
    );

    worker.status = WorkerStatus::Backoff;
    worker.pid = None;
    worker.start_time = None;
    worker.last_exit_code = None;
    worker.last_exit_signal = Some(9);
    worker.next_restart_at = Some(now + SignedDuration::from_secs(8));
    worker.restarts = 4;
    store.upsert_worker(&worker).await.unwrap();
    store
        .upsert_worker(&worker_record("beta", now))
        .await
        .unwrap();
    let all = store.workers().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], worker);

    assert!(store.delete_worker(&id("acme")).await.unwrap());
    assert!(!store.delete_worker(&id("acme")).await.unwrap());
    assert_eq!(store.worker(&id("acme")).await.unwrap(), None);
});

store_test!(a_worker_for_an_unknown_tenant_is_a_query_error, |store| {
    let err = store
        .upsert_worker(&worker_record("ghost", at("2026-11-28T10:00:00Z")))
        .await
        .unwrap_err();
    assert!(!err.is_unavailable(), "{err:#}");
    assert!(matches!(err, flowhq::store::Error::Query { .. }), "{err:?}");
    assert!(err.to_string().contains("`ghost`"), "{err}");
});

store_test!(the_database_enforces_enum_values, |store, db| {
    let now = at("2026-11-28T10:00:00Z");
    seed_tenant(&store, "acme").await;
    store
        .session_set_state(&id("acme"), SessionState::Connected, None, now)
        .await
        .unwrap();
    store
        .upsert_worker(&worker_record("acme", now))
        .await
        .unwrap();
    store
        .log_message(&message("acme", Direction::In, Some("m1"), now))
        .await
        .unwrap();
    // Writing around the typed API must still fail: the CHECK constraints hold the enums.
    for (sql, what) in [
        ("UPDATE tenants SET lifecycle = 'deleted'", "lifecycle"),
        (
            "UPDATE whatsapp_sessions SET state = 'ONLINE'",
            "session state",
        ),
        (
            "UPDATE worker_processes SET status = 'ZOMBIE'",
            "worker status",
        ),
        ("UPDATE message_log SET direction = 'SIDEWAYS'", "direction"),
        (
            "UPDATE worker_processes SET restarts = -1",
            "negative restarts",
        ),
    ] {
        let (refused, changed) = if db.url().starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(db.url()).await.unwrap();
            match sqlx::query(sql).execute(&pool).await {
                Ok(done) => (false, done.rows_affected()),
                Err(_) => (true, 0),
            }
        } else {
            let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
            match sqlx::query(sql).execute(&pool).await {
                Ok(done) => (false, done.rows_affected()),
                Err(_) => (true, 0),
            }
        };
        assert!(refused, "an unknown {what} was accepted ({changed} rows)");
    }
});

store_test!(session_states_qr_codes_and_heartbeats, |store| {
    seed_tenant(&store, "acme").await;
    let tenant = id("acme");
    let t1 = at("2026-11-28T10:00:01Z");
    let t2 = at("2026-11-28T10:00:02Z");
    let t3 = at("2026-11-28T10:00:03Z");
    let t4 = at("2026-11-28T10:00:04Z");

    store
        .session_set_state(&tenant, SessionState::Starting, None, t1)
        .await
        .unwrap();
    store
        .session_set_qr(&tenant, "2@abc,def,ghi", t2)
        .await
        .unwrap();
    let session = store.session(&tenant).await.unwrap().unwrap();
    assert_eq!(session.state, SessionState::QrReady);
    assert_eq!(session.qr.as_deref(), Some("2@abc,def,ghi"));
    assert_eq!(session.qr_issued_at, Some(t2));

    store.session_heartbeat(&tenant, t3).await.unwrap();
    let session = store.session(&tenant).await.unwrap().unwrap();
    assert_eq!(session.last_seen_at, Some(t3));
    assert_eq!(session.updated_at, t2, "a heartbeat is not a state change");
    assert_eq!(session.state, SessionState::QrReady);

    store
        .session_set_state(&tenant, SessionState::Connected, None, t4)
        .await
        .unwrap();
    store
        .session_set_linked(&tenant, "+255712345678", Some("Mama Asha"), t4)
        .await
        .unwrap();
    let session = store.session(&tenant).await.unwrap().unwrap();
    assert_eq!(session.state, SessionState::Connected);
    assert_eq!(session.qr, None, "leaving QR_READY drops the code");
    assert_eq!(session.qr_issued_at, None);
    assert_eq!(session.linked_number.as_deref(), Some("+255712345678"));
    assert_eq!(session.push_name.as_deref(), Some("Mama Asha"));
    assert_eq!(session.last_seen_at, Some(t3));

    store
        .session_set_state(
            &tenant,
            SessionState::Conflict,
            Some("opened elsewhere"),
            t4,
        )
        .await
        .unwrap();
    let sessions = store.sessions().await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].error.as_deref(), Some("opened elsewhere"));
    assert_eq!(store.session(&id("other")).await.unwrap(), None);
});

store_test!(
    a_heartbeat_before_any_state_creates_a_starting_session,
    |store| {
        seed_tenant(&store, "acme").await;
        let t1 = at("2026-11-28T10:00:01Z");
        store.session_heartbeat(&id("acme"), t1).await.unwrap();
        let session = store.session(&id("acme")).await.unwrap().unwrap();
        assert_eq!(session.state, SessionState::Starting);
        assert_eq!(session.last_seen_at, Some(t1));
    }
);

store_test!(logging_a_message_twice_stores_it_once, |store| {
    seed_tenant(&store, "acme").await;
    let when = at("2026-11-28T10:00:00Z");
    let first = store
        .log_message(&message("acme", Direction::In, Some("wamid.1"), when))
        .await
        .unwrap();
    let Inserted::New(first_id) = first else {
        panic!("first insert was {first:?}")
    };
    assert_eq!(
        store
            .log_message(&message("acme", Direction::In, Some("wamid.1"), when))
            .await
            .unwrap(),
        Inserted::Duplicate
    );
    // The same id in the other direction is another message.
    assert!(matches!(
        store
            .log_message(&message("acme", Direction::Out, Some("wamid.1"), when))
            .await
            .unwrap(),
        Inserted::New(id) if id > first_id
    ));
    // Without a WhatsApp id nothing can be deduplicated.
    for _ in 0..2 {
        assert!(matches!(
            store
                .log_message(&message("acme", Direction::Out, None, when))
                .await
                .unwrap(),
            Inserted::New(_)
        ));
    }
    assert_eq!(store.messages(&id("acme"), 100).await.unwrap().len(), 4);
});

store_test!(batched_logging_reports_each_message, |store| {
    seed_tenant(&store, "acme").await;
    let when = at("2026-11-28T10:00:00Z");
    store
        .log_message(&message("acme", Direction::In, Some("old"), when))
        .await
        .unwrap();
    let batch = vec![
        message("acme", Direction::In, Some("a"), when),
        message("acme", Direction::In, Some("old"), when),
        message("acme", Direction::In, Some("b"), when),
        message("acme", Direction::In, Some("a"), when),
        message("acme", Direction::Out, None, when),
    ];
    let answers = store.log_messages(&batch).await.unwrap();
    assert_eq!(answers.len(), 5);
    assert!(matches!(answers[0], Inserted::New(_)));
    assert_eq!(answers[1], Inserted::Duplicate);
    assert!(matches!(answers[2], Inserted::New(_)));
    assert_eq!(answers[3], Inserted::Duplicate);
    assert!(matches!(answers[4], Inserted::New(_)));
    assert_eq!(store.log_messages(&[]).await.unwrap(), []);
    assert_eq!(store.messages(&id("acme"), 100).await.unwrap().len(), 4);
});

store_test!(large_batches_are_split_and_still_answer_in_order, |store| {
    seed_tenant(&store, "acme").await;
    let when = at("2026-11-28T10:00:00Z");
    // Every 7th message repeats an earlier one (the previous 7th), every 11th has no id.
    let batch: Vec<NewMessage> = (0..1_300)
        .map(|n| {
            let wa = if n % 11 == 0 {
                None
            } else if n % 7 == 0 && n > 0 {
                Some(format!("m{}", n - 7))
            } else {
                Some(format!("m{n}"))
            };
            message("acme", Direction::In, wa.as_deref(), when)
        })
        .collect();
    let answers = store.log_messages(&batch).await.unwrap();
    let expected_new = answers
        .iter()
        .zip(&batch)
        .filter(|(answer, _)| matches!(answer, Inserted::New(_)))
        .count();
    let mut seen = std::collections::HashSet::new();
    for (answer, message) in answers.iter().zip(&batch) {
        match &message.wa_message_id {
            None => assert!(matches!(answer, Inserted::New(_))),
            Some(wa) if seen.insert(wa.clone()) => {
                assert!(matches!(answer, Inserted::New(_)), "{wa}")
            }
            Some(wa) => assert_eq!(*answer, Inserted::Duplicate, "{wa}"),
        }
    }
    let stored = store.messages(&id("acme"), 10_000).await.unwrap();
    assert_eq!(stored.len(), expected_new);
    // Each answer's id is the row holding that message.
    let by_id: std::collections::HashMap<i64, &flowhq::store::MessageRecord> =
        stored.iter().map(|m| (m.id, m)).collect();
    for (answer, message) in answers.iter().zip(&batch) {
        if let Inserted::New(new_id) = answer {
            assert_eq!(by_id[new_id].wa_message_id, message.wa_message_id);
        }
    }
});

store_test!(a_failing_batch_writes_nothing, |store| {
    seed_tenant(&store, "acme").await;
    let when = at("2026-11-28T10:00:00Z");
    let batch = vec![
        message("acme", Direction::In, Some("a"), when),
        message("ghost", Direction::In, Some("b"), when),
    ];
    let err = store.log_messages(&batch).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err:#}");
    assert!(store.messages(&id("acme"), 100).await.unwrap().is_empty());
});

store_test!(messages_are_read_newest_first_and_followed_by_id, |store| {
    seed_tenant(&store, "acme").await;
    seed_tenant(&store, "beta").await;
    let base = at("2026-11-28T10:00:00Z");
    let mut ids = Vec::new();
    for n in 0..5 {
        let when = base + SignedDuration::from_secs(n);
        let wa = format!("m{n}");
        let Inserted::New(new_id) = store
            .log_message(&message("acme", Direction::In, Some(&wa), when))
            .await
            .unwrap()
        else {
            panic!("duplicate")
        };
        ids.push(new_id);
        store
            .log_message(&message("beta", Direction::In, Some(&wa), when))
            .await
            .unwrap();
    }
    let latest = store.messages(&id("acme"), 3).await.unwrap();
    let latest_ids: Vec<i64> = latest.iter().map(|m| m.id).collect();
    assert_eq!(latest_ids, [ids[4], ids[3], ids[2]]);
    assert_eq!(latest[0].wa_message_id.as_deref(), Some("m4"));
    assert_eq!(latest[0].created_at, base + SignedDuration::from_secs(4));
    assert_eq!(latest[0].body, "hello m4");
    assert_eq!(latest[0].direction, Direction::In);
    assert!(latest.iter().all(|m| m.tenant == id("acme")));

    let after: Vec<i64> = store
        .messages_after(&id("acme"), ids[1], 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(after, &ids[2..]);
    assert_eq!(
        store.messages_after(&id("acme"), 0, 2).await.unwrap().len(),
        2
    );
    assert!(
        store
            .messages_after(&id("acme"), ids[4], 10)
            .await
            .unwrap()
            .is_empty()
    );
});

store_test!(
    events_are_filtered_by_tenant_and_keep_their_detail,
    |store| {
        let t1 = at("2026-11-28T10:00:00Z");
        let t2 = at("2026-11-28T10:01:00Z");
        let t3 = at("2026-11-28T10:02:00Z");
        let restarted = NewEvent {
            revision: Some("a1b2c3d".to_owned()),
            detail: Some(serde_json::json!({"fields": ["phone"]})),
            ..event(Some(id("acme")), t1, "restarted", "phone changed")
        };
        let refused = event(None, t2, "prune_refused", "would retire 9 of 10 tenants");
        let other = event(Some(id("beta")), t3, "reloaded", "hours changed");
        let first = store.record_event(&restarted).await.unwrap();
        store.record_event(&refused).await.unwrap();
        store.record_event(&other).await.unwrap();

        let acme = store.events(Some(&id("acme")), 10).await.unwrap();
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0].id, first);
        assert_eq!(acme[0].kind, "restarted");
        assert_eq!(acme[0].reason, "phone changed");
        assert_eq!(acme[0].revision.as_deref(), Some("a1b2c3d"));
        assert_eq!(acme[0].detail, restarted.detail);
        assert_eq!(acme[0].at, t1);

        let all = store.events(None, 10).await.unwrap();
        let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["reloaded", "prune_refused", "restarted"]);
        assert_eq!(all[1].tenant, None);
        assert_eq!(store.events(None, 1).await.unwrap().len(), 1);
    }
);

store_test!(contacts_opt_out_and_back_in, |store| {
    seed_tenant(&store, "acme").await;
    let tenant = id("acme");
    let chat = "255700000001@c.us";
    let now = at("2026-11-28T10:00:00Z");
    assert!(!store.is_opted_out(&tenant, chat).await.unwrap());
    store.set_opted_out(&tenant, chat, true, now).await.unwrap();
    assert!(store.is_opted_out(&tenant, chat).await.unwrap());
    assert!(!store.is_opted_out(&tenant, "other@c.us").await.unwrap());
    store
        .set_opted_out(&tenant, chat, false, now)
        .await
        .unwrap();
    assert!(!store.is_opted_out(&tenant, chat).await.unwrap());
});

store_test!(counters_add_up_per_tenant_and_name, |store| {
    seed_tenant(&store, "acme").await;
    seed_tenant(&store, "beta").await;
    let t0 = at("2026-11-28T10:00:00Z");
    let t1 = at("2026-11-28T10:00:30Z");
    let add = |tenant: &'static str, name: &'static str, delta: i64, now: Timestamp| {
        let store = &store;
        async move {
            store
                .add_counter(&id(tenant), name, delta, now)
                .await
                .unwrap()
        }
    };
    assert_eq!(add("acme", "rate_limited", 1, t0).await, 1);
    assert_eq!(add("acme", "deduplicated", 2, t0).await, 2);
    assert_eq!(add("beta", "rate_limited", 7, t0).await, 7);
    assert_eq!(add("acme", "rate_limited", 4, t1).await, 5);
    assert_eq!(
        store.counters().await.unwrap(),
        [
            (id("acme"), "deduplicated".to_owned(), 2),
            (id("acme"), "rate_limited".to_owned(), 5),
            (id("beta"), "rate_limited".to_owned(), 7),
        ]
    );
    // Only the counter written at t1 is new to a reader that read everything at t0.
    assert_eq!(
        store
            .counters_changed_since(at("2026-11-28T10:00:10Z"))
            .await
            .unwrap(),
        [(id("acme"), "rate_limited".to_owned(), 5)]
    );
    assert_eq!(store.counters_changed_since(t0).await.unwrap().len(), 3);
    assert!(
        store
            .counters_changed_since(at("2026-11-28T10:01:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
});

store_test!(
    only_sessions_written_since_a_time_are_listed_as_changed,
    |store| {
        let t0 = at("2026-11-28T10:00:00Z");
        let t1 = at("2026-11-28T10:00:30Z");
        let t2 = at("2026-11-28T10:01:00Z");
        for tenant in ["quiet", "beating", "scanned"] {
            seed_tenant(&store, tenant).await;
            store
                .session_set_state(&id(tenant), SessionState::Connected, None, t0)
                .await
                .unwrap();
        }
        store.session_heartbeat(&id("beating"), t1).await.unwrap();
        store
            .session_set_qr(&id("scanned"), "2@fresh", t2)
            .await
            .unwrap();
        let changed = |since| {
            let store = &store;
            async move {
                store
                    .sessions_changed_since(since)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| s.tenant.to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(changed(t0).await, ["beating", "quiet", "scanned"]);
        assert_eq!(
            changed(t1).await,
            ["beating", "scanned"],
            "a heartbeat counts"
        );
        assert_eq!(changed(t2).await, ["scanned"]);
        assert!(changed(t2 + SignedDuration::from_secs(1)).await.is_empty());
        let scanned = store.sessions_changed_since(t2).await.unwrap();
        assert_eq!(scanned[0].qr.as_deref(), Some("2@fresh"), "rows are whole");
    }
);

store_test!(a_logout_forgets_the_linked_number, |store| {
    let now = at("2026-11-28T10:00:00Z");
    seed_tenant(&store, "shop").await;
    store
        .session_set_linked(&id("shop"), "255712345678", Some("Shop"), now)
        .await
        .unwrap();
    store
        .session_set_state(&id("shop"), SessionState::Disconnected, None, now)
        .await
        .unwrap();
    let s = store.session(&id("shop")).await.unwrap().unwrap();
    assert_eq!(
        s.linked_number.as_deref(),
        Some("255712345678"),
        "a disconnect keeps it"
    );
    store
        .session_set_state(&id("shop"), SessionState::LoggedOut, None, now)
        .await
        .unwrap();
    let s = store.session(&id("shop")).await.unwrap().unwrap();
    assert_eq!(s.state, SessionState::LoggedOut);
    assert_eq!(s.linked_number, None);
    assert_eq!(s.push_name, None);
});

store_test!(the_snapshot_joins_sessions_and_workers, |store| {
    let now = at("2026-11-28T10:00:00Z");
    for tenant in ["halted", "full", "bare", "linking"] {
        seed_tenant(&store, tenant).await;
    }
    store
        .session_set_qr(&id("linking"), "2@qr-payload", now)
        .await
        .unwrap();
    store
        .session_set_state(&id("full"), SessionState::Connected, None, now)
        .await
        .unwrap();
    store.session_heartbeat(&id("full"), now).await.unwrap();
    let worker = worker_record("full", now);
    store.upsert_worker(&worker).await.unwrap();
    let mut halted = worker_record("halted", now);
    halted.status = WorkerStatus::Held;
    halted.last_error = Some("worker exited with configuration error".to_owned());
    store.upsert_worker(&halted).await.unwrap();
    store
        .set_config_error(
            &id("halted"),
            Some("tenants.d/halted.toml:1:1: error: x"),
            None,
            now,
        )
        .await
        .unwrap();

    let rows = store.snapshot().await.unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.tenant.id.as_str()).collect();
    assert_eq!(ids, ["bare", "full", "halted", "linking"]);
    let linking = rows[3].session.as_ref().unwrap();
    assert_eq!(linking.state, SessionState::QrReady);
    assert_eq!(linking.qr, None, "the snapshot leaves QR payloads out");
    assert_eq!(linking.qr_issued_at, Some(now));

    assert_eq!(rows[0].session, None);
    assert_eq!(rows[0].worker, None);
    assert_eq!(rows[0].last_error(), None);
    assert_eq!(rows[0].tenant.business_name, "Business bare");
    assert_eq!(rows[0].tenant.lifecycle, Lifecycle::Active);

    let full_session = rows[1].session.as_ref().unwrap();
    assert_eq!(full_session.state, SessionState::Connected);
    assert_eq!(full_session.last_seen_at, Some(now));
    assert_eq!(rows[1].worker.as_ref(), Some(&worker));
    assert_eq!(rows[1].last_error(), Some("exited with status 1"));

    assert_eq!(rows[2].worker.as_ref().unwrap().status, WorkerStatus::Held);
    assert_eq!(
        rows[2].last_error(),
        Some("tenants.d/halted.toml:1:1: error: x"),
        "a config error comes before the worker's"
    );

    // The rows of a few tenants alone are the same rows; an id without a tenant row is left out.
    let few = store
        .snapshot_of(&[id("linking"), id("full"), id("nobody")])
        .await
        .unwrap();
    let few_ids: Vec<&str> = few.iter().map(|r| r.tenant.id.as_str()).collect();
    assert_eq!(few_ids, ["full", "linking"]);
    assert_eq!(few[0], rows[1]);
    assert_eq!(few[1], rows[3]);
    assert!(store.snapshot_of(&[]).await.unwrap().is_empty());
});

store_test!(pruning_deletes_exactly_the_old_rows_in_batches, |store| {
    seed_tenant(&store, "acme").await;
    let cutoff = at("2026-11-01T00:00:00Z");
    let old = cutoff - SignedDuration::from_hours(1);
    let new = cutoff + SignedDuration::from_hours(1);
    let mut batch = Vec::new();
    for n in 0..7 {
        batch.push(message(
            "acme",
            Direction::In,
            Some(&format!("old{n}")),
            old,
        ));
    }
    for n in 0..3 {
        batch.push(message(
            "acme",
            Direction::In,
            Some(&format!("new{n}")),
            new,
        ));
    }
    // The cutoff itself is kept: only rows strictly older go.
    batch.push(message("acme", Direction::In, Some("edge"), cutoff));
    store.log_messages(&batch).await.unwrap();
    for (n, when) in [old, old, old, new].into_iter().enumerate() {
        store
            .record_event(&event(
                (n % 2 == 0).then(|| id("acme")),
                when,
                "restarted",
                "test",
            ))
            .await
            .unwrap();
    }

    let counts = store.prune(cutoff, cutoff, 2).await.unwrap();
    assert_eq!(counts.messages, 7);
    assert_eq!(counts.events, 3);
    let left = store.messages(&id("acme"), 100).await.unwrap();
    assert_eq!(left.len(), 4);
    assert!(left.iter().all(|m| m.created_at >= cutoff));
    assert_eq!(store.events(None, 100).await.unwrap().len(), 1);

    let again = store.prune(cutoff, cutoff, 0).await.unwrap();
    assert_eq!((again.messages, again.events), (0, 0));
});

store_test!(messages_and_events_have_their_own_retention, |store| {
    seed_tenant(&store, "acme").await;
    let t = at("2026-11-01T00:00:00Z");
    store
        .log_message(&message("acme", Direction::In, Some("m"), t))
        .await
        .unwrap();
    store
        .record_event(&event(Some(id("acme")), t, "restarted", "test"))
        .await
        .unwrap();
    let hour = SignedDuration::from_hours(1);
    let counts = store.prune(t + hour, t - hour, 100).await.unwrap();
    assert_eq!((counts.messages, counts.events), (1, 0));
    assert!(store.messages(&id("acme"), 10).await.unwrap().is_empty());
    assert_eq!(store.events(None, 10).await.unwrap().len(), 1);
    let counts = store.prune(t - hour, t + hour, 100).await.unwrap();
    assert_eq!((counts.messages, counts.events), (0, 1));
    assert!(store.events(None, 10).await.unwrap().is_empty());
});

/// A host with hundreds of workers must not exhaust PostgreSQL's `max_connections`: a worker's
/// pool opens at most two connections however many calls it makes at once, and closes them
/// once they have been idle for 30 s (the pool's reaper runs every 30 s, so within a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_workers_postgres_pool_holds_two_connections_at_most_and_lets_them_go_when_idle() {
    let Some(db) = support::TestDb::postgres().await else {
        return;
    };
    db.store().await.close().await;
    let worker = Store::connect(db.url(), flowhq::store::Role::Worker)
        .await
        .unwrap();
    seed_tenant(&worker, "acme").await;
    let watcher = sqlx::PgPool::connect(db.url()).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'flowhq-worker'",
        )
        .fetch_one(&watcher)
        .await
        .unwrap()
    };
    // Ten callers at once, for a second, while the connections are counted.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let callers: Vec<_> = (0..10)
        .map(|n| {
            let worker = worker.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while std::time::Instant::now() < until {
                    worker
                        .log_message(&message(
                            "acme",
                            Direction::In,
                            Some(&format!("c{n}-{i}")),
                            at("2026-11-28T10:00:00Z"),
                        ))
                        .await
                        .unwrap();
                    worker.snapshot().await.unwrap();
                    i += 1;
                }
                i
            })
        })
        .collect();
    let mut most = 0;
    while std::time::Instant::now() < until {
        most = most.max(count().await);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut calls = 0;
    for caller in callers {
        calls += caller.await.unwrap();
    }
    assert!(calls >= 10, "the callers made {calls} calls");
    assert!(
        (1..=2).contains(&most),
        "a worker's pool held {most} connections"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while count().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a worker's idle connections were never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_sqlite_database_and_its_directory_are_created_on_connect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/nested/flowhq.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url, flowhq::store::Role::Worker)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert!(path.exists());
    // WAL mode is a property of the file, visible to any later connection.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

store_test!(batched_workers_and_events_are_written_in_order, |store| {
    use flowhq::store::{NewEvent, WorkerRecord};
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let ids: Vec<TenantId> = (0..3)
        .map(|i| TenantId::parse(&format!("batch-{i}")).unwrap())
        .collect();
    for id in &ids {
        store
            .upsert_tenant(&tenant_record(id.as_str(), now))
            .await
            .unwrap();
    }
    let workers: Vec<WorkerRecord> = ids
        .iter()
        .map(|id| WorkerRecord {
            node: "host".into(),
            pid: Some(42),
            start_time: Some(7),
            restarts: 1,
            last_exit_signal: Some(9),
            healthy_since: Some(now),
            ..records::running_worker(id, now)
        })
        .collect();
    store.upsert_workers(&workers).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), workers);
    let events: Vec<NewEvent> = (0..5)
        .map(|i| {
            event(
                Some(ids[i % 3].clone()),
                now,
                "started",
                format!("reason {i}"),
            )
        })
        .collect();
    store.record_events(&events).await.unwrap();
    let got: Vec<String> = store
        .events(None, 10)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| e.reason)
        .collect();
    assert_eq!(
        got,
        (0..5).map(|i| format!("reason {i}")).collect::<Vec<_>>()
    );
});

/// Workers' commits (message log, sessions) reach the disk before they return; the daemon's
/// rows, rebuilt from files after a loss, are synced at checkpoints.
#[tokio::test]
async fn worker_connections_sync_every_commit_and_the_daemons_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("flowhq.db").display());
    let daemon = Store::connect(&url, flowhq::store::Role::Daemon)
        .await
        .unwrap();
    daemon.migrate().await.unwrap();
    let worker = Store::connect(&url, flowhq::store::Role::Worker)
        .await
        .unwrap();
    // PRAGMA synchronous: 1 = NORMAL, 2 = FULL.
    assert_eq!(daemon.sqlite_synchronous().await.unwrap(), Some(1));
    assert_eq!(worker.sqlite_synchronous().await.unwrap(), Some(2));
}

store_test!(pairing_code_requests_and_answers, |store| {
    seed_tenant(&store, "acme").await;
    let tenant = id("acme");
    let t1 = at("2026-11-28T10:00:01Z");
    let t2 = at("2026-11-28T10:00:02Z");
    let t3 = at("2026-11-28T10:00:03Z");
    let t4 = at("2026-11-28T10:00:04Z");
    assert!(
        !store.session_request_link_code(&tenant, t1).await.unwrap(),
        "no session row, no worker to ask"
    );
    store.session_set_qr(&tenant, "2@qr", t1).await.unwrap();
    assert_eq!(
        store.session_link_code_request(&tenant).await.unwrap(),
        (None, None)
    );
    assert!(store.session_request_link_code(&tenant, t2).await.unwrap());
    store
        .session_set_link_code(&tenant, Ok("ABCD1234"), t3)
        .await
        .unwrap();
    assert_eq!(
        store.session_link_code_request(&tenant).await.unwrap(),
        (Some(t2), Some(t3))
    );
    let s = store.session(&tenant).await.unwrap().unwrap();
    assert_eq!(s.state, SessionState::QrReady);
    assert_eq!(s.link_code.as_deref(), Some("ABCD1234"));
    assert_eq!(s.link_code_issued_at, Some(t3));
    assert_eq!(s.qr, None, "the code replaces the QR");
    assert!(
        store
            .sessions_changed_since(t3)
            .await
            .unwrap()
            .iter()
            .any(|s| s.link_code.as_deref() == Some("ABCD1234")),
        "the daemon's incremental read sees the code"
    );

    // A refusal keeps the state and says why; a new QR or any other state clears the code.
    store
        .session_set_link_code(&tenant, Err("invalid phone number"), t4)
        .await
        .unwrap();
    let s = store.session(&tenant).await.unwrap().unwrap();
    assert_eq!(s.link_code, None);
    assert_eq!(s.error.as_deref(), Some("invalid phone number"));
    store
        .session_set_link_code(&tenant, Ok("WXYZ5678"), t4)
        .await
        .unwrap();
    store
        .session_set_state(&tenant, SessionState::Authenticated, None, t4)
        .await
        .unwrap();
    assert_eq!(
        store.session(&tenant).await.unwrap().unwrap().link_code,
        None
    );
});
