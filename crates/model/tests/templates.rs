//! Chat templates rendered by minijinja against transformers' `apply_chat_template` (fixtures
//! from `scripts/parity/make_fixtures.py`): byte-identical text, identical token ids.

use std::path::Path;

use model::chat::ChatTemplate;
use model::init::{QWEN2_5_TEMPLATE, QWEN3_TEMPLATE};
use model::tokenizer::Tokenizer;
use serde_json::Value;

fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/templates"
    ))
}

#[test]
fn renderings_and_token_ids_match_transformers() {
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json"),
    )
    .unwrap();
    let tokenizer = Tokenizer::from_file(&fixtures().join("tokenizer.json")).unwrap();
    let qwen2_5 = ChatTemplate::new(QWEN2_5_TEMPLATE).unwrap();
    let qwen3 = ChatTemplate::new(QWEN3_TEMPLATE).unwrap();
    assert!(cases.len() >= 10, "only {} cases", cases.len());
    let mut with_tools = 0;
    for case in &cases {
        let name = format!("{}/{}", case["template"], case["name"]);
        let template = match case["template"].as_str() {
            Some("qwen2_5") => &qwen2_5,
            Some("qwen3") => &qwen3,
            other => panic!("{name}: unknown template {other:?}"),
        };
        let messages = case["messages"].as_array().unwrap();
        let tools = case["tools"].as_array().map(Vec::as_slice);
        with_tools += usize::from(tools.is_some());
        let extra = case["extra"].as_object().cloned().unwrap_or_default();
        let rendered = template
            .render(
                messages,
                tools,
                case["add_generation_prompt"].as_bool().unwrap(),
                &extra,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = case["expected"].as_str().unwrap();
        assert_eq!(rendered, expected, "{name}");
        let ids: Vec<u32> = serde_json::from_value(case["expected_ids"].clone()).unwrap();
        assert_eq!(
            tokenizer.encode(&rendered).unwrap(),
            ids,
            "{name}: token ids"
        );
        assert_eq!(
            tokenizer.decode(&ids, false).unwrap(),
            rendered,
            "{name}: decode"
        );
    }
    assert!(with_tools >= 4, "only {with_tools} cases with tools");
}
