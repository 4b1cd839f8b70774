//! The backend's publish route: one event for a user (all their live streams) or for one
//! of their device sessions.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edge_auth_protocol::{RESERVED_PREFIX, rules};

use crate::ids::DeviceSessionId;
use crate::push::ports::{Append, AppendOutcome, PushStore};
use crate::push::settings::{MAX_EVENT_PAYLOAD_BYTES, PushSettings};
use crate::random::Random;
use crate::sessions::input::UserRef;
use crate::sessions::usecases::{SessionError, locate_with};

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no such user (the user has never logged in)")]
    UserNotFound,
    #[error("no active device session of this user has this id")]
    SessionNotFound,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A checked publish request.
#[derive(Debug, Clone)]
pub struct Publication {
    pub user: UserRef,
    pub device: Option<DeviceSessionId>,
    pub event_type: String,
    /// The payload's JSON bytes.
    pub payload: Vec<u8>,
}

impl Publication {
    /// Checks every field: the user id as the internal API takes it, the device session
    /// id, an event type like a message type but never `gateway.*` (the gateway's own),
    /// and a payload of at most [`MAX_EVENT_PAYLOAD_BYTES`].
    ///
    /// # Errors
    /// `InvalidRequest`, naming the field.
    pub fn parse(
        user_id: &str,
        device_session_id: Option<&str>,
        event_type: &str,
        payload: Vec<u8>,
    ) -> Result<Self, PublishError> {
        let invalid = |m: String| PublishError::InvalidRequest(m);
        let user = UserRef::parse(user_id).map_err(|e| invalid(format!("user_id: {e}")))?;
        let device = device_session_id
            .map(DeviceSessionId::parse)
            .transpose()
            .map_err(|e| invalid(format!("device_session_id: {e}")))?;
        if !rules::is_message_type(event_type) || event_type.starts_with(RESERVED_PREFIX) {
            return Err(invalid(format!(
                "event_type must be 1-64 characters of a-z 0-9 . _ - starting with a letter, \
                 and not gateway.* (the gateway's own); got {:?}",
                event_type.chars().take(80).collect::<String>()
            )));
        }
        if payload.len() > MAX_EVENT_PAYLOAD_BYTES {
            return Err(invalid(format!(
                "payload must be at most {MAX_EVENT_PAYLOAD_BYTES} bytes of JSON, got {}",
                payload.len()
            )));
        }
        // Devices get these bytes as they are: they must be JSON that a common parser
        // takes, nesting no deeper than serde_json's limit (128 levels), as a parsed body
        // was before payloads were passed on unparsed.
        serde_json::from_slice::<serde_json::Value>(&payload)
            .map_err(|e| invalid(format!("payload is not JSON devices can parse: {e}")))?;
        Ok(Self {
            user,
            device,
            event_type: event_type.to_string(),
            payload,
        })
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `ev_…`: the event's id on every stream it reached.
    pub event_id: String,
    /// Address slots written (a directory user may have several).
    pub streams: u32,
}

/// A fresh event id: `ev_` and 16 random bytes, unpadded base64url.
///
/// # Errors
/// The random source failed.
pub fn event_id(random: &impl Random) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    random.fill(&mut bytes)?;
    Ok(format!("ev_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Appends `publication` to the stream of every address slot of its user (one store call
/// each), or of its one device session's slot.
///
/// # Errors
/// See [`PublishError`]. Slots written before a store failure keep the event; a retry
/// writes it again under a new id.
pub fn publish(
    store: &impl PushStore,
    random: &impl Random,
    limits: &PushSettings,
    publication: &Publication,
) -> Result<Published, PublishError> {
    let tags = match &publication.device {
        Some(device) => vec![device.tag()],
        None => locate_with(&publication.user, |u| store.locate_user(u)).map_err(|e| match e {
            SessionError::Unexpected(e) => PublishError::Unexpected(e),
            SessionError::UserNotFound => PublishError::UserNotFound,
            other => PublishError::Unexpected(anyhow::Error::new(other)),
        })?,
    };
    let event_id = event_id(random)?;
    let mut streams = 0;
    for tag in tags {
        let outcome = store.append(
            tag,
            &Append {
                event_id: &event_id,
                event_type: &publication.event_type,
                user: &publication.user,
                device: publication.device.as_ref(),
                payload: &publication.payload,
                limits,
            },
        )?;
        match outcome {
            AppendOutcome::Appended { .. } => streams += 1,
            AppendOutcome::UnknownUser => {}
            AppendOutcome::UnknownSession => return Err(PublishError::SessionNotFound),
        }
    }
    if streams == 0 {
        return Err(PublishError::UserNotFound);
    }
    Ok(Published { event_id, streams })
}
