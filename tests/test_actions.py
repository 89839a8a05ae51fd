"""Reply parsing: what counts as a command, what is ignored."""

from contextbox.actions import parse_reply


def ops(reply, levels=("l1",)):
    return [(a.kind, a.level, a.op) for a in parse_reply(reply, levels).actions]


def test_bare_json():
    assert ops('{"op": "find", "text": "x"}') == [("command", "l1", "find")]


def test_json_fence_with_prose_around():
    r = 'Let me search.\n```json\n{"op": "regex", "pattern": "a+"}\n```\nThen I will read.'
    assert ops(r) == [("command", "l1", "regex")]


def test_array():
    r = '[{"op": "find", "text": "x", "store": "h"}, {"op": "get", "name": "h"}]'
    assert ops(r) == [("command", "l1", "find"), ("command", "l1", "get")]


def test_commands_after_final_in_array_are_dropped():
    p = parse_reply('[{"op": "final", "answer": "a"}, {"op": "find", "text": "x"}]')
    assert [a.op for a in p.actions] == ["final"] and p.notes


def test_second_command_ignored_with_note():
    p = parse_reply('{"op": "find", "text": "x"}\nresult: ...\n{"op": "final", "answer": "y"}')
    assert [a.op for a in p.actions] == ["find"]
    assert "only the first command" in p.notes[0]


def test_json_without_op_is_not_a_command():
    p = parse_reply('Here is data: {"a": 1}')
    assert not p.actions and p.error == "no command found in your reply"


def test_invalid_json_error_says_where():
    p = parse_reply('{"op": "find", "text": "x"')
    assert not p.actions and "not valid JSON" in p.error


def test_prose_final_is_not_final():
    p = parse_reply("FINAL(42)\nThe answer is 42.")
    assert not p.actions and p.error


def test_l4_ops_route_to_l4():
    assert ops('{"op": "llm_query", "prompt": "hi"}') == [("command", "l4", "llm_query")]


def test_code_fences_in_order_and_level_choice():
    r = "```repl\na = 1\n```\ntext\n```python\nprint(a)\n```"
    assert ops(r, ("l1", "l2")) == [("code", "l2", "code"), ("code", "l2", "code")]
    assert ops(r, ("l1", "l3")) == [("code", "l3", "code"), ("code", "l3", "code")]
    assert ops("```native\nx=1\n```", ("l1", "l2", "l3")) == [("code", "l3", "code")]


def test_code_then_fake_output_and_final_prose():
    r = "```repl\nprint(find('x'))\n```\nOutput:\n[]\nFINAL(nothing)"
    p = parse_reply(r, ("l1", "l2"))
    assert [a.kind for a in p.actions] == ["code"]


def test_unterminated_fence_still_parsed():
    assert ops('```json\n{"op": "count", "what": "lines"}') == [("command", "l1", "count")]


def test_empty_reply():
    assert parse_reply("").error


def test_deeply_nested_junk_is_not_a_crash():
    for junk in ("[" * 5000, '{"a":' * 5000, '{"op": ' + "[" * 5000):
        p = parse_reply(junk)
        assert not p.actions and p.error


def test_actions_run_in_reply_order():
    r = '{"op": "set", "name": "x", "value": "1"}\n```repl\nprint(x)\n```'
    assert ops(r, ("l1", "l2")) == [("command", "l1", "set"), ("code", "l2", "code")]
    r2 = '```repl\nx = 1\n```\n{"op": "get", "name": "x"}'
    assert ops(r2, ("l1", "l2")) == [("code", "l2", "code"), ("command", "l1", "get")]
