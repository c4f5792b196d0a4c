"""A sample deck made at run time (nothing binary is committed).

``sample_deck()`` is a short Markdown deck whose speaker notes are Japanese
narration: the README's first render. ``generated_deck(slides, seconds)``
makes a longer one of about the given narration length (the benchmark's).
``python -m pipelines.render.sample DIR`` writes ``DIR/sample.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

SAMPLE = """# dojo へようこそ
- スライドとナレーションから動画を作ります
- 進捗はブラウザにライブで届きます
Note: dojo へようこそ。このサンプルでは、スライドと原稿から、ナレーション付きの動画を作ります。

---

# しくみ
- 音声合成はスライドごとに並列で動きます
- 動画は一回の ffmpeg 呼び出しで作ります
Note: 音声はスライドごとに合成されます。動画は、静止画と音声をまとめて一度に書き出します。

---

# できあがり
- MP4 と字幕とサムネイル
- 保存先はローカルか S3
Note: 最後に、動画と字幕とサムネイルが保存されます。ご覧いただき、ありがとうございました。
"""

_TOPICS = ["音声合成", "字幕", "動画の書き出し", "キュー", "進捗の表示", "再試行", "キャンセル",
           "ストレージ", "キャッシュ", "まとめ", "監視", "スケジュール"]
_SENTENCES = [
    "この章では{t}について説明します。",
    "{t}は、ジョブの中でひとつの段階として動きます。",
    "失敗したときは、同じ入力でもう一度やり直せます。",
    "結果はストレージに保存されます。",
    "変更した部分だけが作り直されます。",
]


def sample_deck() -> tuple[str, bytes]:
    """``(file name, bytes)`` of the bundled three-slide Markdown deck."""
    return "sample.md", SAMPLE.encode("utf-8")


def generated_deck(slides: int = 10, sentences_per_slide: int = 4) -> tuple[str, bytes]:
    """A Markdown deck of ``slides`` slides with Japanese notes (~9 s of speech per slide at 4 sentences)."""
    parts = []
    for number in range(slides):
        topic = _TOPICS[number % len(_TOPICS)]
        notes = "".join(_SENTENCES[(number + i) % len(_SENTENCES)].format(t=topic)
                        for i in range(sentences_per_slide))
        parts.append(f"# {number + 1}. {topic}\n- 要点その一: {topic}の考え方\n- 要点その二: 実際の使い方\n"
                     f"- 要点その三: よくある落とし穴\n\nNote: {notes}\n")
    return "deck.md", "\n---\n\n".join(parts).encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    target = Path((argv if argv is not None else sys.argv[1:] or ["."])[0])
    target.mkdir(parents=True, exist_ok=True)
    name, data = sample_deck()
    (target / name).write_bytes(data)
    print(target / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
