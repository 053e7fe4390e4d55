//! dmap's deployment, read from `template.yaml`: the template with CloudFormation's intrinsics resolved for a
//! stack ([`template`]), and that stack's queues, table and bucket created on an emulator from the same
//! definitions, with each function's environment and event sources ([`local`]).

pub mod local;
pub mod template;

pub use local::{Stack, StackOptions};
pub use template::{Context, Template, TemplateError};
