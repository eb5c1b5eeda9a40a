//! Runs of appends (`Ledger::append_many`) against a real nats-server: as one fast-ingest batch
//! where the case stream takes them (nats-server ≥ 2.14), one by one otherwise; duplicates are
//! dropped message by message and the run goes on; a refused message stops the run with an
//! exact count of what is certainly stored.

use std::time::Duration;

use xinfang_shared::event::{Actor, Envelope, EventData};
use xinfang_shared::ids::{CaseId, NodeCode};
use xinfang_shared::ledger::Ledger;
use xinfang_shared::subjects;
use xinfang_tests::NatsServer;

fn node() -> NodeCode {
    NodeCode::parse("320211").unwrap()
}

fn event(i: usize, reason: &str) -> Envelope {
    Envelope::new(
        format!("run-{i}"),
        CaseId::parse(&format!("320211-20261127-{:06}", i % 50 + 1)).unwrap(),
        node(),
        xinfang_shared::time::now_cst(),
        Actor::system("test"),
        None,
        EventData::Closed { reason: reason.into() },
    )
}

async fn stored(nats: &NatsServer) -> u64 {
    let js = nats.jetstream().await;
    js.get_stream(subjects::case_stream(&node())).await.unwrap().info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_appends_is_one_fast_batch_and_its_repeat_stores_nothing_twice() {
    let nats = NatsServer::start(false);
    let js = nats.jetstream().await;
    // a case stream from before fast-ingest batches: opening the ledger turns them on
    js.create_stream(async_nats::jetstream::stream::Config {
        name: subjects::case_stream(&node()),
        subjects: vec![subjects::case_events(&node())],
        duplicate_window: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let ledger = Ledger::open(js, node()).await.unwrap();
    assert!(ledger.batched(), "nats-server ≥ 2.14 takes fast-ingest batches");

    // the run tells how much of it is confirmed as the server acknowledges it
    let mut reports = Vec::new();
    let run = (0..3000).map(|i| ledger.outgoing(&event(i, "first")));
    assert_eq!(ledger.append_rendered_with(run, |n| reports.push(n)).await.unwrap(), 3000);
    assert_eq!(stored(&nats).await, 3000);
    assert!(reports.len() >= 3, "confirmed in steps, not only at the end: {reports:?}");
    assert!(reports.windows(2).all(|w| w[0] < w[1]), "each report confirms more: {reports:?}");
    assert_eq!(reports.last(), Some(&3000));
    // the same run again with ten new events: the duplicates are dropped one by one
    assert_eq!(ledger.append_many((0..3010).map(|i| event(i, "again"))).await.unwrap(), 3010);
    assert_eq!(stored(&nats).await, 3010);
    // each case's events are in the order they were given
    let case = CaseId::parse("320211-20261127-000007").unwrap();
    let events = ledger.events(&case).await.unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let want: Vec<String> = (0..3010).filter(|i| i % 50 == 6).map(|i| format!("run-{i}")).collect();
    assert_eq!(ids, want);
    // a duplicate never replaces what was stored first
    let reasons: Vec<&str> = events.iter().map(|e| e.data["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons[..reasons.len() - 1], vec!["first"; reasons.len() - 1][..]);
    assert_eq!(reasons.last(), Some(&"again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_by_one_appends_drop_duplicates_too() {
    let nats = NatsServer::start(false);
    let ledger = Ledger::open(nats.jetstream().await, node()).await.unwrap();
    assert_eq!(ledger.append_each((0..1000).map(|i| event(i, "first"))).await.unwrap(), 1000);
    assert_eq!(ledger.append_each((500..1200).map(|i| event(i, "again"))).await.unwrap(), 700);
    assert_eq!(stored(&nats).await, 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_stops_the_run_and_what_is_counted_stored_is_stored() {
    let nats = NatsServer::start(false);
    let js = nats.jetstream().await;
    let ledger = Ledger::open(js.clone(), node()).await.unwrap();
    let mut stream = js.get_stream(subjects::case_stream(&node())).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_message_size = 4096;
    js.update_stream(config).await.unwrap();

    let big = "长".repeat(2000);
    let run = (0..2000).map(|i| event(i, if i == 1200 { big.as_str() } else { "ok" }));
    for (name, result) in
        [("batch", ledger.append_many(run.clone()).await), ("one by one", ledger.append_each(run).await)]
    {
        let partial = result.expect_err(name);
        assert!(partial.stored <= 1200, "{name}: {} counted stored before the refused event", partial.stored);
        for i in [0, partial.stored.saturating_sub(1)] {
            let e = event(i, "ok");
            let ids: Vec<String> = ledger.events(&e.case_id).await.unwrap().into_iter().map(|e| e.event_id).collect();
            assert!(ids.contains(&e.event_id), "{name}: event {i} is counted stored but is not in the ledger");
        }
    }
    let total = stream.info().await.unwrap().state.messages;
    assert!(total < 2000, "the refused event is not stored ({total})");
}
