//! Typed ids (UUID v7): a `BotId` can never be passed where an `OrgId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                // Only the canonical hyphenated form: one spelling per id keeps lookups and logs exact.
                if s.len() != 36 {
                    return Err(InvalidId);
                }
                Uuid::try_parse(s).map(Self).map_err(|_| InvalidId)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Uuid,
                    )))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// The text is not a canonical UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct InvalidId;

typed_id!(
    /// An organization: the tenant boundary.
    OrgId
);
typed_id!(
    /// A person who signs in.
    UserId
);
typed_id!(
    /// An invitation to join an organization.
    InvitationId
);
typed_id!(
    /// A chatbot.
    BotId
);
typed_id!(
    /// A dialogue of a bot (pattern dialogues for now).
    DialogueId
);
typed_id!(
    /// A nudge of a bot.
    NudgeId
);
typed_id!(
    /// A ticket: a conversation humans still owe an answer.
    TicketId
);
typed_id!(
    /// A blocked address or network of an organization (temporary, or the persistent blacklist).
    AddressBlockId
);
typed_id!(
    /// An address or network an organization trusts: spam detection and blocks never apply.
    TrustedAddressId
);
typed_id!(
    /// A public key a bot owner uploaded to verify their visitors' identity tokens.
    IdentityKeyId
);
typed_id!(
    /// A server-side login session.
    SessionId
);
typed_id!(
    /// An API key.
    ApiKeyId
);
typed_id!(
    /// A chat between a visitor and a bot (the chat id of the widget and its channel).
    ConversationId
);
typed_id!(
    /// One message in a conversation.
    MessageId
);
typed_id!(
    /// One event in an audit chain.
    AuditEventId
);
typed_id!(
    /// A webhook endpoint of a bot: a URL, the events it receives and its signing secret.
    WebhookId
);
typed_id!(
    /// One event for one webhook endpoint; also its `webhook-id` header, the same on every retry.
    WebhookDeliveryId
);
typed_id!(
    /// A knowledge source of a bot: an uploaded file, an imported URL, or a text or Q&A entry.
    SourceId
);
typed_id!(
    /// One passage of a knowledge source, as indexed and cited.
    ChunkId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text_form() {
        let id = BotId::new();
        assert_eq!(id.to_string().parse::<BotId>().ok(), Some(id));
    }

    #[test]
    fn only_the_hyphenated_form_parses() {
        let id = OrgId::new();
        let simple = id.0.simple().to_string();
        assert!(simple.parse::<OrgId>().is_err());
        assert!("not-an-id".parse::<OrgId>().is_err());
    }
}
