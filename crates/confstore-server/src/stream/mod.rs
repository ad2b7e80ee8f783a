//! The live stream (docs/design.md §9): the MQTT publisher inside `serve`, its settings (its
//! checkpoint file is `confstore_lkg::publisher_checkpoint`), and the embedded broker `serve` starts when no external one is given (rumqttd
//! behind the [`gate`], which authenticates clients and enforces the topic ACL).
//! Topics and payloads are defined in `confstore_core::stream` (shared with the client).

pub mod broker;
pub mod fleet;
pub mod gate;
pub mod outbox;
pub mod publisher;
pub mod settings;

pub use publisher::run;
pub use settings::MqttSettings;
