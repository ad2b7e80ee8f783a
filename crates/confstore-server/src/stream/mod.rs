//! The live stream (docs/design.md §9): the MQTT publisher inside `serve`, its settings (its
//! checkpoint file is `confstore_lkg::publisher_checkpoint`), and the embedded broker `serve`
//! starts when no external one is given (the [`hub`] in process, behind the [`gate`], which
//! speaks MQTT to clients, authenticates them and enforces the topic ACL).
//! Topics and payloads are defined in `confstore_core::stream` (shared with the client).

pub mod broker;
pub mod fleet;
pub mod gate;
pub mod hub;
pub mod outbox;
pub mod publisher;
pub mod settings;

pub use publisher::run;
pub use settings::MqttSettings;
