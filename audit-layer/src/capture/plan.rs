//! How each field of a callsite is captured, decided once per callsite and thread.
//!
//! Which column a field fills, whether it holds a secret, and its JSON key depend on the
//! field's name alone, and the names are fixed per callsite. Deciding them on every event
//! cost a string match, a secret-pattern lookup and the key's escaping for each field; with
//! a plan made on a callsite's first event, each field of the next ones is an array index.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use tracing::field::Field;
use tracing::Metadata;

use super::draft::{is_inherited_field, Column, USER_ID_FIELD};
use super::fixups;
use super::json::json_string;
use super::redact::Redactor;

/// Where a field's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Text(Column),
    UserId,
    Metadata,
}

/// What to do with one field, whatever its value.
#[derive(Debug, Clone)]
pub(crate) struct FieldPlan {
    pub(crate) slot: Slot,
    /// A column a span may pass on to the events inside it.
    pub(crate) inherited: bool,
    /// Whether the value must be replaced by `[REDACTED]`.
    pub(crate) secret: bool,
    /// The metadata member's start, `"key":`, with the key repaired or renamed as needed.
    pub(crate) key: Box<str>,
    /// The fix-up notes every record carrying this field gets for its key.
    pub(crate) key_notes: Box<[String]>,
}

impl FieldPlan {
    fn new(name: &str, redactor: &Redactor) -> FieldPlan {
        let slot = match Column::of_field(name) {
            Some(column) => Slot::Text(column),
            None if name == USER_ID_FIELD => Slot::UserId,
            None => Slot::Metadata,
        };
        let mut key_notes = Vec::new();
        let key = fixups::metadata_key(name, &mut key_notes);
        let mut member = String::with_capacity(key.len() + 3);
        json_string(&mut member, &key);
        member.push(':');
        FieldPlan {
            slot,
            inherited: is_inherited_field(name),
            secret: redactor.is_secret(name),
            key: member.into_boxed_str(),
            key_notes: key_notes.into_boxed_slice(),
        }
    }
}

/// The plans for every field of one callsite, by field index.
#[derive(Debug)]
pub(crate) struct CallsitePlan {
    metadata: &'static Metadata<'static>,
    fields: Box<[FieldPlan]>,
    redactor: Redactor,
}

impl CallsitePlan {
    /// This callsite's plan for this redactor, made on first use on this thread.
    pub(crate) fn of(metadata: &'static Metadata<'static>, redactor: &Redactor) -> Rc<Self> {
        let key = (redactor.id(), std::ptr::from_ref(metadata) as usize);
        let made = PLANS.try_with(|plans| {
            if let Some(plan) = plans.borrow().get(&key) {
                return Rc::clone(plan);
            }
            let plan = Rc::new(CallsitePlan::new(metadata, redactor));
            plans.borrow_mut().insert(key, Rc::clone(&plan));
            plan
        });
        // A thread being torn down has no cache left: plan without one.
        made.unwrap_or_else(|_| Rc::new(CallsitePlan::new(metadata, redactor)))
    }

    fn new(metadata: &'static Metadata<'static>, redactor: &Redactor) -> Self {
        CallsitePlan {
            metadata,
            fields: metadata
                .fields()
                .iter()
                .map(|field| FieldPlan::new(field.name(), redactor))
                .collect(),
            redactor: redactor.clone(),
        }
    }

    /// The plan for `field`; made on the spot for a field of another callsite (which
    /// tracing never hands a visitor, but nothing here depends on that).
    pub(crate) fn field(&self, field: &Field) -> Cow<'_, FieldPlan> {
        let planned = (field.callsite() == self.metadata.callsite())
            .then(|| self.fields.get(field.index()))
            .flatten();
        match planned {
            Some(plan) => Cow::Borrowed(plan),
            None => Cow::Owned(FieldPlan::new(field.name(), &self.redactor)),
        }
    }
}

/// (redactor id, callsite metadata address) → plan. Callsites are static and few, so the
/// cache is bounded by the program's own code.
type Plans = HashMap<(usize, usize), Rc<CallsitePlan>, BuildHasherDefault<AddressHasher>>;

thread_local! {
    static PLANS: RefCell<Plans> = RefCell::new(HashMap::default());
}

/// The key is made of an address and a small id; mixing them is all the hashing needed.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::fixups::{FIXUPS_KEY, RENAMED_FIXUPS_KEY};

    #[test]
    fn a_plan_names_the_column_the_secret_and_the_key() {
        let redactor = Redactor::new(["password"]);
        let site = FieldPlan::new("site", &redactor);
        assert_eq!(
            (site.slot, site.secret, &*site.key),
            (Slot::Metadata, false, r#""site":"#)
        );
        let secret = FieldPlan::new("db_password", &redactor);
        assert!(secret.secret);
        let user = FieldPlan::new("username", &redactor);
        assert_eq!(user.slot, Slot::Text(Column::Username));
        assert!(user.inherited);
        assert!(!FieldPlan::new("event_type", &redactor).inherited);
        let renamed = FieldPlan::new(FIXUPS_KEY, &redactor);
        assert_eq!(&*renamed.key, format!("\"{RENAMED_FIXUPS_KEY}\":"));
        assert_eq!(renamed.key_notes.len(), 1);
    }
}
