//! The receiving end of 属地 forwarding: transfers addressed to this node arrive in
//! `XF_INBOX_N` (JetStream sourcing from the sender's outbox) and become `transferred_in`,
//! with the case snapshot, under the same case id. Idempotent by derived event id and by a
//! look at the case's history.

use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::event::{Actor, Envelope, EventData};
use xinfang_shared::ledger::{Expect, Ledger};
use xinfang_shared::transfer::Transfer;

/// Records one transfer as `transferred_in`.
pub async fn receive(ledger: &Ledger, d: Delivery) -> Outcome {
    let message = d.event;
    let transfer = match Transfer::from_envelope(&message) {
        Ok(t) => t,
        Err(e) => return Outcome::Reject(e),
    };
    if &transfer.to_node != ledger.node() {
        return Outcome::Reject(format!("transfer for node {} arrived at {}", transfer.to_node, ledger.node()));
    }
    let event = Envelope::new(
        message.caused_id("transferred_in"),
        message.case_id.clone(),
        ledger.node().clone(),
        xinfang_shared::time::to_cst(chrono::Utc::now().fixed_offset()),
        Actor::system("intake"),
        Some(message.event_id.clone()),
        EventData::TransferredIn {
            from_node: message.node.clone(),
            snapshot: transfer.snapshot,
            organ_id: transfer.organ_id,
        },
    );
    match ledger.history(&message.case_id).await {
        Ok(h) if h.iter().any(|s| s.event.event_id == event.event_id) => return Outcome::Done,
        Ok(_) => {}
        Err(e) => return Outcome::Retry(e.to_string()),
    }
    match ledger.append(&event, Expect::Any).await {
        Ok(_) => {
            tracing::info!(case = %message.case_id, from = %message.node, "case transferred in");
            Outcome::Done
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}
