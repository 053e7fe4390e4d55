//! dmap's deployment, read from `template.yaml`: the template with CloudFormation's intrinsics resolved for a
//! stack ([`template`]), and that stack's queues, table and bucket created on an emulator from the same
//! definitions, with each function's environment and event sources ([`stack`]).

pub mod stack;
pub mod template;

pub use stack::{Stack, StackOptions};
pub use template::{Context, Template, TemplateError};
