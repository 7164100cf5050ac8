//! What an episode leaves behind: the conversation, one record per step (calls, observations,
//! timings, seeds, usage), the outcome, and for token-level policies the exact token sequences
//! with sampled log-probs and a loss mask.
//!
//! Token sequences follow the exact-prefix rule: a turn continues the current
//! [`TokenSegment`] only if its prompt token ids start with every token of that segment;
//! otherwise (the chat template re-rendered history differently) a new segment starts, so no
//! token is ever trained on that the model did not see in that position.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::{FinishReason, Message, TokenTrace, ToolSpec, Usage};
use crate::outcome::Outcome;

/// One episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub task_id: String,
    pub episode_id: String,
    pub policy: String,
    /// The episode's seed; each step's sampling seed derives from it and the step index.
    pub seed: u64,
    pub outcome: Outcome,
    /// Every message, the system prompt first.
    pub messages: Vec<Message>,
    /// The tools the model was given.
    pub tools: Vec<ToolSpec>,
    pub steps: Vec<Step>,
    /// Summed over steps (prompt tokens count again at every step).
    pub usage: Usage,
    /// Prompt plus completion tokens of the last step: how full the context got.
    pub final_context_tokens: u64,
    pub started_unix_ms: u64,
    pub wall_seconds: f64,
    pub policy_seconds: f64,
    pub tool_seconds: f64,
    /// Token sequences for training; empty unless the policy returned token traces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_segments: Vec<TokenSegment>,
}

/// One policy call and what was done with its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub index: u32,
    /// The seed sent with the request.
    pub sampling_seed: u64,
    /// Seconds since the episode started.
    pub started_seconds: f64,
    pub policy_seconds: f64,
    pub tool_seconds: f64,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// Index in [`Trajectory::messages`] of the assistant message.
    pub assistant_message: usize,
    /// The calls run, in order (none if the turn was a format error).
    pub calls: Vec<CallRecord>,
    /// Why nothing was run, if the turn had no usable tool call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<StepTokens>,
}

/// One tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: String,
    pub name: String,
    pub arguments: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<Repair>,
    /// Index in [`Trajectory::messages`] of the tool message answering it (`None` for a
    /// successful `submit`, or a call cut short by the episode's end).
    pub observation_message: Option<usize>,
    /// The model's arguments were refused or the tool reported a mistake.
    pub is_error: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecSummary>,
}

/// What a command did, for reports (the text the model saw is in the conversation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecSummary {
    pub exit_code: i32,
    pub seconds: f64,
    pub cpu_seconds: f64,
    /// The sandbox limit that ended the command (`wall_clock`, `memory`, `cpu_time`,
    /// `file_size`, `output`), if one did.
    pub killed_by: Option<String>,
    pub output_bytes: u64,
    pub elided_bytes: u64,
}

/// A slip that was repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Repair {
    /// The JSON was wrapped in a Markdown code fence.
    CodeFence,
    /// A `,` before `}` or `]`.
    TrailingComma,
    /// Strings or keys in single quotes.
    SingleQuotes,
    /// A raw newline, tab or other control character inside a string.
    ControlCharInString,
    /// A `"` inside a string that was not escaped.
    UnescapedQuote,
    /// A backslash before a character JSON does not allow to be escaped (`\d`, `\'`).
    InvalidEscape,
    /// Python's `True`, `False`, `None`.
    PythonLiteral,
    /// A string that was never closed.
    UnclosedString,
    /// `}` or `]` missing at the end.
    MissingCloser,
    /// Text after the JSON value.
    TrailingText,
    /// A `<tool_call>` without its `</tool_call>`.
    UnclosedTag,
    /// The arguments were a JSON string holding the JSON object.
    ArgumentsAsString,
    /// The arguments were under `parameters` (or `args`) instead of `arguments`.
    ArgumentsKey,
}

/// Where a step's tokens are in the trajectory's token segments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTokens {
    pub segment: usize,
    /// Position of the first completion token in the segment.
    pub completion_start: usize,
    pub completion_tokens: usize,
    pub prompt_tokens: usize,
}

/// A token sequence to train on: one prompt continued turn after turn.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenSegment {
    pub token_ids: Vec<u32>,
    /// 1 for tokens the model sampled, 0 for prompt and observation tokens.
    pub loss_mask: Vec<u8>,
    /// The sampled log-prob where the mask is 1, 0 elsewhere.
    pub logprobs: Vec<f32>,
    pub first_step: u32,
    pub last_step: u32,
}

/// Builds token segments turn by turn.
#[derive(Debug, Default)]
pub struct SegmentBuilder {
    segments: Vec<TokenSegment>,
    /// Whether the last segment may still be continued.
    open: bool,
}

impl SegmentBuilder {
    /// Adds one turn; returns where its completion went.
    pub fn push(&mut self, step: u32, trace: &TokenTrace) -> StepTokens {
        let prompt = &trace.prompt_token_ids;
        let continues = self.open
            && self.segments.last().is_some_and(|s| {
                prompt.len() >= s.token_ids.len() && prompt.starts_with(&s.token_ids)
            });
        if !continues {
            self.segments.push(TokenSegment {
                first_step: step,
                ..TokenSegment::default()
            });
        }
        self.open = true;
        let index = self.segments.len() - 1;
        let segment = &mut self.segments[index];
        let new_prompt = &prompt[segment.token_ids.len()..];
        segment.token_ids.extend_from_slice(new_prompt);
        segment
            .loss_mask
            .extend(std::iter::repeat_n(0, new_prompt.len()));
        segment
            .logprobs
            .extend(std::iter::repeat_n(0.0, new_prompt.len()));
        let completion_start = segment.token_ids.len();
        segment
            .token_ids
            .extend_from_slice(&trace.completion_token_ids);
        segment
            .loss_mask
            .extend(std::iter::repeat_n(1, trace.completion_token_ids.len()));
        segment.logprobs.extend_from_slice(&trace.logprobs);
        segment.last_step = step;
        StepTokens {
            segment: index,
            completion_start,
            completion_tokens: trace.completion_token_ids.len(),
            prompt_tokens: prompt.len(),
        }
    }

    /// A turn without a token trace: the next turn starts a new segment.
    pub fn interrupt(&mut self) {
        self.open = false;
    }

    pub fn finish(self) -> Vec<TokenSegment> {
        self.segments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(prompt: &[u32], completion: &[u32]) -> TokenTrace {
        TokenTrace {
            prompt_token_ids: prompt.to_vec(),
            completion_token_ids: completion.to_vec(),
            logprobs: completion.iter().map(|&t| -(t as f32) / 100.0).collect(),
        }
    }

    #[test]
    fn turns_that_extend_the_prefix_share_a_segment_and_others_split() {
        let mut builder = SegmentBuilder::default();
        let a = builder.push(0, &trace(&[1, 2, 3], &[10, 11]));
        // Prompt = previous prompt + completion + observation tokens 4, 5.
        let b = builder.push(1, &trace(&[1, 2, 3, 10, 11, 4, 5], &[12]));
        // Re-rendered history (11 became 99): a new segment.
        let c = builder.push(2, &trace(&[1, 2, 3, 10, 99, 4, 5, 12, 6], &[13]));
        builder.interrupt();
        let d = builder.push(3, &trace(&[1, 2, 3, 10, 99, 4, 5, 12, 6, 13, 7], &[14]));
        assert_eq!((a.segment, b.segment, c.segment, d.segment), (0, 0, 1, 2));
        assert_eq!(
            (b.completion_start, b.completion_tokens, b.prompt_tokens),
            (7, 1, 7)
        );
        let segments = builder.finish();
        assert_eq!(segments[0].token_ids, vec![1, 2, 3, 10, 11, 4, 5, 12]);
        assert_eq!(segments[0].loss_mask, vec![0, 0, 0, 1, 1, 0, 0, 1]);
        assert_eq!(
            segments[0].logprobs,
            vec![0.0, 0.0, 0.0, -0.10, -0.11, 0.0, 0.0, -0.12]
        );
        assert_eq!((segments[0].first_step, segments[0].last_step), (0, 1));
        assert_eq!(segments[1].loss_mask, vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!((segments[1].first_step, segments[1].last_step), (2, 2));
        assert_eq!(segments[2].token_ids.len(), 12);
        for segment in &segments {
            assert_eq!(segment.token_ids.len(), segment.loss_mask.len());
            assert_eq!(segment.token_ids.len(), segment.logprobs.len());
        }
    }
}
