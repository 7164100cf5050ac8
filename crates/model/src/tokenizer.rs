//! The tokenizer of a checkpoint (`tokenizer.json`, via the `tokenizers` crate) and training of a
//! Qwen2-style byte-level BPE from text, for checkpoints this crate creates.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::{Error, Result};

/// Qwen2's pre-tokenization pattern (the GPT-4 pattern with single digits).
pub const QWEN2_SPLIT_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A loaded tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    added_ids: HashSet<u32>,
    byte_of_char: HashMap<char, u8>,
}

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::wrap(inner))
    }

    /// Loads `tokenizer.json` from a checkpoint directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    pub fn from_json(json: &str) -> Result<Self> {
        let inner = json
            .parse::<tokenizers::Tokenizer>()
            .map_err(Error::tokenizer)?;
        Ok(Self::wrap(inner))
    }

    fn wrap(inner: tokenizers::Tokenizer) -> Self {
        let added_ids = inner.get_added_tokens_decoder().into_keys().collect();
        Self {
            inner,
            added_ids,
            byte_of_char: byte_level_inverse(),
        }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, without added BOS/EOS; special tokens written in the text (as chat
    /// templates do) become their ids, like transformers' `apply_chat_template(tokenize=True)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(Error::tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(Error::tokenizer)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The bytes a token stands for: the inverse of the byte-level alphabet for BPE tokens, the
    /// content for added tokens, the decoded text otherwise.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        let is_added = self.added_ids.contains(&id);
        if let (false, Some(token)) = (is_added, self.inner.id_to_token(id)) {
            let bytes: Option<Vec<u8>> = token
                .chars()
                .map(|c| self.byte_of_char.get(&c).copied())
                .collect();
            if let Some(bytes) = bytes {
                return Ok(bytes);
            }
        }
        Ok(self.decode(&[id], false)?.into_bytes())
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(Error::tokenizer)
    }
}

/// Tokens added after training: `(content, special)`. Special tokens are dropped by
/// `decode(skip_special_tokens=true)`; the tool-call markers are not, as in Qwen2.5, so that tool
/// calls survive decoding.
pub const ADDED_TOKENS: [(&str, bool); 9] = [
    ("<|endoftext|>", true),
    ("<|im_start|>", true),
    ("<|im_end|>", true),
    ("<tool_call>", false),
    ("</tool_call>", false),
    ("<tool_response>", false),
    ("</tool_response>", false),
    ("<think>", false),
    ("</think>", false),
];

/// Trains a Qwen2-style byte-level BPE (NFC, Qwen2's split pattern, byte-level alphabet) with at
/// most `n_merged_vocab` entries on `texts`, then appends [`ADDED_TOKENS`]. Deterministic for the
/// same inputs.
pub fn train_byte_level_bpe(texts: &[String], n_merged_vocab: usize) -> Result<Tokenizer> {
    let split = Split::new(
        SplitPattern::Regex(QWEN2_SPLIT_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(Error::tokenizer)?;
    let byte_level = ByteLevel::new(false, false, false);
    let pre_tokenizer = Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(byte_level),
    ]);
    let mut inner = tokenizers::Tokenizer::new(BPE::default());
    inner.with_normalizer(Some(NFC)).map_err(Error::tokenizer)?;
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(byte_level));
    inner.with_post_processor(Some(byte_level));
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(n_merged_vocab)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(alphabet)
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    inner
        .train(&mut trainer, texts.iter())
        .map_err(Error::tokenizer)?;
    // One at a time, so ids follow the order of ADDED_TOKENS.
    for &(content, special) in &ADDED_TOKENS {
        let token = AddedToken::from(content, special).normalized(false);
        if special {
            inner.add_special_tokens([token])
        } else {
            inner.add_tokens([token])
        }
        .map_err(Error::tokenizer)?;
    }
    Ok(Tokenizer::wrap(inner))
}

/// GPT-2's byte-to-character table, inverted: the byte each byte-level alphabet character encodes.
fn byte_level_inverse() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}
