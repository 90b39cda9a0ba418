//! The store's side of `flowhq restart` and `flowhq events` on both backends: restart requests
//! are taken once, and events are read after an id (the follower) and since a time.

#![allow(clippy::unwrap_used)]

use flowhq::config::TenantId;
use flowhq::store::NewEvent;
use jiff::{SignedDuration, Timestamp};

use crate::support;

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

store_test!(a_restart_request_is_taken_once, |store| {
    let salon = id("salon");
    support::seed_tenant(&store, &salon).await;
    let now = Timestamp::now();
    let ids = store
        .request_restarts(&[salon.clone(), salon.clone()], "ops@host", now)
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    let waiting = store.waiting_restarts().await.unwrap();
    assert_eq!(
        waiting.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids,
        "{waiting:?}"
    );
    assert_eq!(waiting[0].requested_by, "ops@host");
    assert_eq!(waiting[0].tenant, salon);
    // Two daemons taking the same request: only the first gets it.
    let first = [(ids[0], "restarting worker pid 7".to_owned())];
    assert_eq!(store.take_restarts(&first, now).await.unwrap(), [ids[0]]);
    assert!(store.take_restarts(&first, now).await.unwrap().is_empty());
    let waiting = store.waiting_restarts().await.unwrap();
    assert_eq!(waiting.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1]]);
    let all = store.restart_requests(ids[0], ids[1]).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].outcome.as_deref(), Some("restarting worker pid 7"));
    assert_eq!(
        all[0].handled_at,
        Some(Timestamp::from_millisecond(now.as_millisecond()).unwrap())
    );
    assert_eq!(all[1].handled_at, None);
    // Taken requests are forgotten a day after.
    let later = now + SignedDuration::from_hours(25);
    let second = [(ids[1], "nothing to restart".to_owned())];
    assert_eq!(store.take_restarts(&second, later).await.unwrap(), [ids[1]]);
    let left = store.restart_requests(ids[0], ids[1]).await.unwrap();
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1]]);
});

store_test!(events_are_read_after_an_id_and_since_a_time, |store| {
    let salon = id("salon");
    let now = Timestamp::now();
    assert_eq!(store.last_event_id().await.unwrap(), 0);
    for (n, (tenant, age)) in [(Some(&salon), 120), (None, 60), (Some(&salon), 0)]
        .into_iter()
        .enumerate()
    {
        store
            .record_event(&NewEvent {
                tenant: tenant.cloned(),
                at: now - SignedDuration::from_mins(age),
                kind: "seeded".to_owned(),
                reason: format!("event {n}"),
                revision: None,
                detail: None,
            })
            .await
            .unwrap();
    }
    let reasons = |events: Vec<flowhq::store::EventRecord>| {
        events.into_iter().map(|e| e.reason).collect::<Vec<_>>()
    };
    let last = store.last_event_id().await.unwrap();
    // Newest first, from a time on, for one tenant or all.
    let since = now - SignedDuration::from_mins(90);
    assert_eq!(
        reasons(store.events_since(None, since, 10).await.unwrap()),
        ["event 2", "event 1"]
    );
    assert_eq!(
        reasons(
            store
                .events_since(Some(&salon), Timestamp::UNIX_EPOCH, 10)
                .await
                .unwrap()
        ),
        ["event 2", "event 0"]
    );
    assert_eq!(
        reasons(
            store
                .events_since(None, Timestamp::UNIX_EPOCH, 1)
                .await
                .unwrap()
        ),
        ["event 2"]
    );
    // Oldest first after an id: what a follower reads.
    let all = store.events_after(0, 10).await.unwrap();
    assert_eq!(all.last().map(|e| e.id), Some(last));
    let first = all[0].id;
    assert_eq!(
        reasons(store.events_after(first, 10).await.unwrap()),
        ["event 1", "event 2"]
    );
    assert_eq!(
        reasons(store.events_after(first, 1).await.unwrap()),
        ["event 1"]
    );
    assert!(store.events_after(last, 10).await.unwrap().is_empty());
});
