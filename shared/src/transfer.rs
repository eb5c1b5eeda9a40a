//! Cross-node transfer (属地 forwarding, DESIGN.md §6): the sending node's routing writes a
//! `transfer` envelope to its outbox; the receiving node's intake appends `transferred_in`
//! with the snapshot, under the same case id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Envelope, EventData, Registered};
use crate::ids::{NodeCode, OrganId};

/// The `kind` of a transfer in `xf.<from>.out.<to>.transfer`, and its envelope type.
pub const KIND: &str = "transfer";

/// The data of a transfer envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub to_node: NodeCode,
    pub reason: String,
    /// The case's events so far at the sending node, as written there.
    pub snapshot: Vec<Value>,
    /// The organ of the receiving node that should take the case (复查/复核 one level up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organ_id: Option<OrganId>,
}

impl Transfer {
    /// The transfer carried by an envelope of type `transfer`.
    pub fn from_envelope(e: &Envelope) -> Result<Self, String> {
        if e.kind != KIND {
            return Err(format!("not a transfer: {}", e.kind));
        }
        serde_json::from_value(e.data.clone()).map_err(|err| format!("bad transfer: {err}"))
    }
}

/// The registered petition of a case, from its own `registered` event or from the snapshot a
/// `transferred_in` carried (possibly nested through several transfers).
pub fn registered_of(events: &[Envelope]) -> Option<Registered> {
    events.iter().find_map(|e| match e.data() {
        Ok(Some(EventData::Registered(r))) => Some(r.as_ref().clone()),
        Ok(Some(EventData::TransferredIn { snapshot, .. })) => registered_of(&crate::state::snapshot_events(snapshot)),
        _ => None,
    })
}
