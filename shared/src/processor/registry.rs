//! The registry's machinery: [`processors!`] turns the list of processors (one line each, in
//! [`crate::processor`]) into the two closed types the pipeline carries, so that nothing else names a processor:
//!
//! - `ProcessorSpec`: the job spec's `processor` field, one variant per processor holding its config,
//!   internally tagged by `kind` (`{"kind": "count"}`); its methods dispatch to the [`super::Processor`] impl.
//! - `Aggregate`: a partial result, one variant per processor, externally tagged by the same kind; it is what
//!   a batch part holds and what the finalizer merges.
//!
//! Enums rather than `dyn` objects because both must be serde types (in queue messages, the job record, the
//! manifest, batch parts) with the exact bytes they have today, and a closed set lets two partial results of
//! different kinds be refused by name instead of failing a downcast.

/// Declares the processors: `"kind" => Variant(module::Processor),` per processor, each documented. Declares
/// each `module` (a file beside this one), and generates `ProcessorSpec` and `Aggregate` with their dispatch.
macro_rules! processors {
    ($( $(#[$doc:meta])* $kind:literal => $variant:ident($module:ident::$processor:ident), )+) => {
        $(
            mod $module;
            pub use $module::$processor;
        )+

        /// What is computed for each item, and merged into the job's result: the job spec's `processor`
        /// field, `{"kind": "<kind>", <the processor's config>}`.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum ProcessorSpec {
            $( $(#[$doc])* #[serde(rename = $kind)] $variant($processor), )+
        }

        /// A (partial) result of a processor: `{"<kind>": <its aggregate>}`.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Aggregate {
            $( #[serde(rename = $kind)] $variant(<$processor as Processor>::Aggregate), )+
        }

        impl ProcessorSpec {
            /// Every registered `kind`, in the registry's order.
            pub const KINDS: &'static [&'static str] = &[$($kind),+];

            /// The processor's `kind`, as the spec names it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $kind, )+
                }
            }

            /// The rules the processor's config keeps on its own.
            pub fn validate(&self) -> Result<(), ConfigError> {
                match self {
                    $( Self::$variant(p) => p.validate(), )+
                }
            }

            /// The result of zero items.
            pub fn empty(&self) -> Aggregate {
                match self {
                    $( Self::$variant(_) => Aggregate::$variant(Default::default()), )+
                }
            }

            /// The result of zero items of `kind` (the job's result before any part is merged into it).
            pub fn empty_for(&self, kind: ItemKind) -> Aggregate {
                match self {
                    $( Self::$variant(_) => Aggregate::$variant(<$processor as Processor>::empty(kind)), )+
                }
            }

            /// The kinds of item it takes.
            pub fn kinds_taken(&self) -> &'static [ItemKind] {
                match self {
                    $( Self::$variant(_) => <$processor as Processor>::TAKES, )+
                }
            }

            /// Processes one item: its partial result and its output record, if any. Blocking: call it from a
            /// blocking thread (the body may be a network stream).
            pub fn process(&self, item: Item<'_>) -> Result<Processed<Aggregate>, ItemError> {
                match self {
                    $( Self::$variant(p) => p.process(item).map(|processed| Processed {
                        result: Aggregate::$variant(processed.result),
                        output: processed.output,
                    }), )+
                }
            }
        }

        impl Aggregate {
            /// Processes `item` straight into this result, for `spec`'s processor: see [`Processor::fold`].
            pub fn fold(
                &mut self,
                spec: &ProcessorSpec,
                item: Item<'_>,
            ) -> Result<Option<serde_json::Value>, FoldError> {
                match (self, spec) {
                    $( (Self::$variant(a), ProcessorSpec::$variant(p)) => p.fold(a, item), )+
                    #[allow(unreachable_patterns)] // with a single processor every pair matches above
                    (a, p) => Err(MergeError::KindMismatch(p.kind(), a.kind()).into()),
                }
            }

            fn kind(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $kind, )+
                }
            }

            /// Folds `other` into `self`. All or nothing: on an error `self` is as it was.
            pub fn merge(&mut self, other: Aggregate) -> Result<(), MergeError> {
                match (self, other) {
                    $( (Self::$variant(a), Self::$variant(b)) => <$processor as Processor>::merge(a, b), )+
                    #[allow(unreachable_patterns)] // with a single processor every pair matches above
                    (a, b) => Err(MergeError::KindMismatch(b.kind(), a.kind())),
                }
            }

            /// The user-facing `result.json` form (numbers as JSON numbers).
            pub fn to_result_json(&self) -> serde_json::Value {
                match self {
                    $( Self::$variant(a) => <$processor as Processor>::result_json(a), )+
                }
            }

            /// `result.json`'s bytes: see [`Processor::result_bytes`].
            pub fn result_bytes(&self) -> Vec<u8> {
                match self {
                    $( Self::$variant(a) => <$processor as Processor>::result_bytes(a), )+
                }
            }

            /// The groups it holds: see [`Processor::groups`].
            pub fn groups(&self) -> usize {
                match self {
                    $( Self::$variant(a) => <$processor as Processor>::groups(a), )+
                }
            }

            /// It in `shards` results by group: see [`Processor::shard`].
            pub fn shard(self, shards: usize) -> Vec<Aggregate> {
                match self {
                    $( Self::$variant(a) => <$processor as Processor>::shard(a, shards)
                        .into_iter()
                        .map(Self::$variant)
                        .collect(), )+
                }
            }
        }
    };
}

pub(super) use processors;
