//! The receiving end of 属地 forwarding: transfers addressed to this node arrive in
//! `XF_INBOX_N` (JetStream sourcing from the sender's outbox) and become `transferred_in`,
//! with the case snapshot, under the same case id. Idempotent by derived event id and by a
//! look at the case's history.

use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::event::{self, Actor, Envelope, EventData};
use xinfang_shared::ledger::{Expect, Ledger};
use xinfang_shared::transfer::Transfer;

const TRANSFERRED_IN: &str = "transferred_in";

/// Whether the case's `events` already hold the `transferred_in` of transfer `message`.
fn received(message: &Envelope, events: &[Envelope]) -> bool {
    event::answered(events, &[message.caused_id(TRANSFERRED_IN)])
}

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
        message.caused_id(TRANSFERRED_IN),
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
    match ledger.events(&message.case_id).await {
        Ok(events) if received(&message, &events) => return Outcome::Done,
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

#[cfg(test)]
mod tests {
    use super::*;
    use xinfang_shared::fixtures;

    /// Issue 14: only intake's own `transferred_in` answers a transfer, not any event that
    /// names the transfer as its cause.
    #[test]
    fn another_services_answer_to_the_same_message_does_not_count() {
        let registered = fixtures::registered("01REG", fixtures::at(2, 9));
        let mut transfer = registered.clone();
        transfer.event_id = registered.caused_id("transfer");
        let foreign = fixtures::notified(&transfer, "receipt");
        assert!(!received(&transfer, &[registered.clone(), foreign.clone()]));
        let mut mine = foreign.clone();
        mine.event_id = transfer.caused_id(TRANSFERRED_IN);
        assert!(received(&transfer, &[registered, foreign, mine]));
    }
}
