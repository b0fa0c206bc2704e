//! Who acts on the state machine. The log stores a copy of the caller's
//! identity and groups as they were when the control API accepted the
//! call, so that replaying the log never needs the identity provider.

use serde::{Deserialize, Serialize};

use juris_types::Principal;

/// A person or machine identity acting on the control plane. Identity is
/// `issuer` + `subject`; `name` is only for display, `groups` are what the
/// IdP said at the time of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub issuer: String,
    pub subject: String,
    pub name: String,
    pub groups: Vec<String>,
}

impl Actor {
    /// This actor's identity, without the display parts.
    pub fn identity(&self) -> Identity {
        Identity {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
        }
    }

    /// Whether this actor is the identity `issuer` + `subject`.
    pub fn is(&self, issuer: &str, subject: &str) -> bool {
        self.issuer == issuer && self.subject == subject
    }

    /// Whether both are the same identity (names and groups may differ
    /// between calls; the identity does not).
    pub fn same_identity(&self, other: &Actor) -> bool {
        self.is(&other.issuer, &other.subject)
    }

    /// Whether the actor belongs to at least one of `groups`.
    pub fn in_any_group(&self, groups: &[String]) -> bool {
        self.groups.iter().any(|group| groups.contains(group))
    }
}

impl From<&Principal> for Actor {
    fn from(principal: &Principal) -> Self {
        Actor {
            issuer: principal.issuer.clone(),
            subject: principal.subject.clone(),
            name: principal.name().to_owned(),
            groups: principal.groups.clone(),
        }
    }
}

impl From<Principal> for Actor {
    fn from(principal: Principal) -> Self {
        Actor::from(&principal)
    }
}

/// An identity without display name or groups: what a data-plane node
/// knows about the principal of a session when it asks to use an approval.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
}

impl From<&Principal> for Identity {
    fn from(principal: &Principal) -> Self {
        Identity {
            issuer: principal.issuer.clone(),
            subject: principal.subject.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_principal_and_compares_identity_only() {
        let principal = Principal {
            issuer: "https://idp".into(),
            subject: "u1".into(),
            display_name: Some("alice@example.com".into()),
            groups: vec!["dba".into()],
            expires_at: 0,
        };
        let actor = Actor::from(&principal);
        assert_eq!(actor.name, "alice@example.com");
        assert!(actor.in_any_group(&["ops".into(), "dba".into()]));
        assert!(!actor.in_any_group(&[]));
        let renamed = Actor {
            name: "Alice".into(),
            groups: vec![],
            ..actor.clone()
        };
        assert!(actor.same_identity(&renamed));
        assert_eq!(Identity::from(&principal), actor.identity());
        let other_issuer = Actor {
            issuer: "https://other".into(),
            ..actor.clone()
        };
        assert!(!actor.same_identity(&other_issuer));
    }
}
