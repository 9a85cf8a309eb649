"""Language ID: fastText lid.176 (ours, filters/langid.py) vs `langid` (the reference), same rows, one run.

    .venv/bin/python bench/language_id.py [--rows N]

Accuracy sample (built by hand for this benchmark, then combined): 8 short sentences in each of 16
languages, written for it in the style of instructions and answers; every ordered pair of two
sentences of one language is a row (56 rows a language, 896 in all), plus each sentence alone (128)
as the short case. Numeric/code sample: 40 English rows that are mostly digits, symbols or code,
which must not be rejected as another language when the allowed language is English.
Speed: the realistic FLAN-style rows of bench/corpus.py (about 180 words), `--rows` of them.
Printed: rows/s (wall) and CPU microseconds a row of both, accuracy (label == true language) on pairs and on single sentences, and how
many numeric/code rows each would reject with `languages: [en]` (ours also with the heuristics
filter's letter/confidence rules, and how many non-English rows those rules still reject).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import flan_rows

from instructforge.filters import langid as ours
from instructforge.filters.config import HeuristicsConfig

SENTENCES = {
    "en": ["Write a short story about a lighthouse keeper who finds a message in a bottle.",
           "Explain why the sky looks blue during the day and red at sunset.",
           "The committee approved the new budget after a long discussion on Tuesday.",
           "Give three tips for staying focused while working from home.",
           "She opened the window and listened to the rain falling on the roof.",
           "Summarize the main argument of the article in two sentences.",
           "Our team will release the updated version of the software next month.",
           "Describe the process of making bread from flour, water and yeast."],
    "fr": ["Écris une courte histoire sur un gardien de phare qui trouve une bouteille à la mer.",
           "Explique pourquoi le ciel est bleu pendant la journée et rouge au coucher du soleil.",
           "Le comité a approuvé le nouveau budget après une longue discussion mardi.",
           "Donne trois conseils pour rester concentré en travaillant à la maison.",
           "Elle a ouvert la fenêtre et a écouté la pluie tomber sur le toit.",
           "Résume l'argument principal de l'article en deux phrases.",
           "Notre équipe publiera la nouvelle version du logiciel le mois prochain.",
           "Décris comment on fait du pain avec de la farine, de l'eau et de la levure."],
    "de": ["Schreibe eine kurze Geschichte über einen Leuchtturmwärter, der eine Flaschenpost findet.",
           "Erkläre, warum der Himmel tagsüber blau und bei Sonnenuntergang rot aussieht.",
           "Der Ausschuss hat den neuen Haushalt nach einer langen Diskussion am Dienstag genehmigt.",
           "Nenne drei Tipps, wie man beim Arbeiten von zu Hause konzentriert bleibt.",
           "Sie öffnete das Fenster und hörte dem Regen auf dem Dach zu.",
           "Fasse das Hauptargument des Artikels in zwei Sätzen zusammen.",
           "Unser Team veröffentlicht die neue Version der Software im nächsten Monat.",
           "Beschreibe, wie man Brot aus Mehl, Wasser und Hefe backt."],
    "es": ["Escribe una historia corta sobre un farero que encuentra un mensaje en una botella.",
           "Explica por qué el cielo se ve azul durante el día y rojo al atardecer.",
           "El comité aprobó el nuevo presupuesto después de una larga discusión el martes.",
           "Da tres consejos para mantener la concentración mientras trabajas desde casa.",
           "Ella abrió la ventana y escuchó la lluvia que caía sobre el tejado.",
           "Resume el argumento principal del artículo en dos oraciones.",
           "Nuestro equipo lanzará la versión actualizada del programa el próximo mes.",
           "Describe cómo se hace el pan con harina, agua y levadura."],
    "it": ["Scrivi un breve racconto su un guardiano del faro che trova un messaggio in una bottiglia.",
           "Spiega perché il cielo è azzurro di giorno e rosso al tramonto.",
           "Il comitato ha approvato il nuovo bilancio dopo una lunga discussione martedì.",
           "Dai tre consigli per restare concentrati mentre si lavora da casa.",
           "Lei aprì la finestra e ascoltò la pioggia che cadeva sul tetto.",
           "Riassumi l'argomento principale dell'articolo in due frasi.",
           "Il nostro gruppo pubblicherà la nuova versione del programma il mese prossimo.",
           "Descrivi come si prepara il pane con farina, acqua e lievito."],
    "pt": ["Escreva uma história curta sobre um faroleiro que encontra uma mensagem numa garrafa.",
           "Explique por que o céu parece azul durante o dia e vermelho ao pôr do sol.",
           "O comitê aprovou o novo orçamento depois de uma longa discussão na terça-feira.",
           "Dê três dicas para manter o foco enquanto trabalha em casa.",
           "Ela abriu a janela e ouviu a chuva caindo sobre o telhado.",
           "Resuma o argumento principal do artigo em duas frases.",
           "Nossa equipe vai lançar a nova versão do programa no próximo mês.",
           "Descreva como se faz pão com farinha, água e fermento."],
    "nl": ["Schrijf een kort verhaal over een vuurtorenwachter die een flessenpost vindt.",
           "Leg uit waarom de lucht overdag blauw is en bij zonsondergang rood.",
           "De commissie keurde de nieuwe begroting dinsdag goed na een lange discussie.",
           "Geef drie tips om geconcentreerd te blijven als je thuis werkt.",
           "Ze opende het raam en luisterde naar de regen op het dak.",
           "Vat het belangrijkste argument van het artikel samen in twee zinnen.",
           "Ons team brengt volgende maand de nieuwe versie van de software uit.",
           "Beschrijf hoe je brood bakt met meel, water en gist."],
    "sv": ["Skriv en kort berättelse om en fyrvaktare som hittar ett meddelande i en flaska.",
           "Förklara varför himlen ser blå ut på dagen och röd vid solnedgången.",
           "Kommittén godkände den nya budgeten efter en lång diskussion i tisdags.",
           "Ge tre tips för att hålla fokus när man arbetar hemifrån.",
           "Hon öppnade fönstret och lyssnade på regnet som föll på taket.",
           "Sammanfatta artikelns huvudargument i två meningar.",
           "Vårt team släpper den nya versionen av programmet nästa månad.",
           "Beskriv hur man bakar bröd av mjöl, vatten och jäst."],
    "pl": ["Napisz krótkie opowiadanie o latarniku, który znajduje list w butelce.",
           "Wyjaśnij, dlaczego niebo jest niebieskie w dzień, a czerwone o zachodzie słońca.",
           "Komisja zatwierdziła nowy budżet po długiej dyskusji we wtorek.",
           "Podaj trzy wskazówki, jak zachować koncentrację podczas pracy w domu.",
           "Otworzyła okno i słuchała deszczu padającego na dach.",
           "Streść główny argument artykułu w dwóch zdaniach.",
           "Nasz zespół wyda nową wersję programu w przyszłym miesiącu.",
           "Opisz, jak upiec chleb z mąki, wody i drożdży."],
    "ru": ["Напиши короткий рассказ о смотрителе маяка, который нашёл записку в бутылке.",
           "Объясни, почему небо днём голубое, а на закате красное.",
           "Комитет утвердил новый бюджет после долгого обсуждения во вторник.",
           "Дай три совета, как сохранять сосредоточенность при работе из дома.",
           "Она открыла окно и слушала, как дождь стучит по крыше.",
           "Кратко изложи главный аргумент статьи в двух предложениях.",
           "Наша команда выпустит новую версию программы в следующем месяце.",
           "Опиши, как испечь хлеб из муки, воды и дрожжей."],
    "tr": ["Bir şişede mesaj bulan bir deniz feneri bekçisi hakkında kısa bir hikaye yaz.",
           "Gökyüzünün gündüz neden mavi, gün batımında neden kırmızı göründüğünü açıkla.",
           "Komite uzun bir tartışmanın ardından salı günü yeni bütçeyi onayladı.",
           "Evden çalışırken odaklanmak için üç ipucu ver.",
           "Pencereyi açtı ve çatıya düşen yağmuru dinledi.",
           "Makalenin ana fikrini iki cümleyle özetle.",
           "Ekibimiz yazılımın yeni sürümünü gelecek ay yayınlayacak.",
           "Un, su ve mayayla nasıl ekmek yapıldığını anlat."],
    "id": ["Tulislah cerita pendek tentang penjaga mercusuar yang menemukan pesan dalam botol.",
           "Jelaskan mengapa langit terlihat biru pada siang hari dan merah saat matahari terbenam.",
           "Komite menyetujui anggaran baru setelah diskusi panjang pada hari Selasa.",
           "Berikan tiga tips agar tetap fokus saat bekerja dari rumah.",
           "Dia membuka jendela dan mendengarkan hujan yang jatuh di atap.",
           "Ringkaslah argumen utama artikel itu dalam dua kalimat.",
           "Tim kami akan merilis versi terbaru perangkat lunak bulan depan.",
           "Jelaskan cara membuat roti dari tepung, air, dan ragi."],
    "vi": ["Hãy viết một câu chuyện ngắn về người gác hải đăng tìm thấy lá thư trong chai.",
           "Giải thích tại sao bầu trời có màu xanh vào ban ngày và màu đỏ lúc hoàng hôn.",
           "Ủy ban đã thông qua ngân sách mới sau một cuộc thảo luận dài vào thứ Ba.",
           "Hãy đưa ra ba lời khuyên để giữ tập trung khi làm việc ở nhà.",
           "Cô ấy mở cửa sổ và lắng nghe tiếng mưa rơi trên mái nhà.",
           "Tóm tắt lập luận chính của bài báo trong hai câu.",
           "Nhóm của chúng tôi sẽ phát hành phiên bản mới của phần mềm vào tháng sau.",
           "Hãy mô tả cách làm bánh mì từ bột mì, nước và men."],
    "zh": ["写一个关于灯塔看守人在瓶子里发现一封信的短篇故事。",
           "解释为什么天空在白天是蓝色的，而在日落时是红色的。",
           "委员会在星期二经过长时间的讨论后批准了新的预算。",
           "请给出三个在家工作时保持专注的建议。",
           "她打开窗户，听着雨水落在屋顶上。",
           "用两句话总结这篇文章的主要论点。",
           "我们的团队将在下个月发布软件的新版本。",
           "描述如何用面粉、水和酵母做面包。"],
    "ja": ["瓶の中に手紙を見つけた灯台守についての短い物語を書いてください。",
           "空が昼間は青く、夕焼けのときは赤く見える理由を説明してください。",
           "委員会は火曜日の長い議論の末、新しい予算を承認しました。",
           "在宅勤務中に集中力を保つための三つのヒントを教えてください。",
           "彼女は窓を開けて、屋根に降る雨の音を聞いていました。",
           "この記事の主な主張を二文で要約してください。",
           "私たちのチームは来月ソフトウェアの新しいバージョンをリリースします。",
           "小麦粉と水と酵母でパンを作る方法を説明してください。"],
    "ar": ["اكتب قصة قصيرة عن حارس منارة يجد رسالة في زجاجة.",
           "اشرح لماذا تبدو السماء زرقاء في النهار وحمراء عند الغروب.",
           "وافقت اللجنة على الميزانية الجديدة بعد نقاش طويل يوم الثلاثاء.",
           "أعط ثلاث نصائح للحفاظ على التركيز أثناء العمل من المنزل.",
           "فتحت النافذة واستمعت إلى المطر وهو يسقط على السطح.",
           "لخص الحجة الرئيسية للمقال في جملتين.",
           "سيطلق فريقنا الإصدار الجديد من البرنامج في الشهر القادم.",
           "صف كيف يصنع الخبز من الدقيق والماء والخميرة."],
}

# English rows (instruction + answer) that are mostly numbers, symbols or code.
NUMERIC = [
    "Compute 12 * 7.\n84", "What is 15% of 240?\n36", "Solve for x: 3x + 5 = 20\nx = 5", "2 + 2 = ?\n4",
    "Sort: 9, 3, 7, 1\n1, 3, 7, 9", "Convert 3.5 km to m.\n3500 m", "1, 1, 2, 3, 5, 8, ?\n13",
    "Round 3.14159 to 2 decimals.\n3.14", "x = [1, 2, 3]\nprint(sum(x))\n6", "def f(a, b):\n    return a + b",
    "SELECT id, name FROM users WHERE age > 30;", "for i in range(10): print(i ** 2)", "a = 5; b = 7; c = a * b",
    "Evaluate (4 + 6) / 2 - 3\n2", "12:45 + 1:30 = 14:15", "ISBN 978-3-16-148410-0", "2024-05-17T10:32:00Z",
    "Phone: +1 (555) 010-9999", "Total: $1,234.56 (tax incl.)", "3x^2 - 2x + 1 = 0", "int main() { return 0; }",
    "lst.sort(key=lambda t: t[1])", "{\"a\": 1, \"b\": [2, 3]}", "sqrt(144) = 12", "17 mod 5 = 2",
    "Find the median: 4, 8, 15, 16, 23, 42\n15.5", "10 km/h = 2.78 m/s", "Q3 revenue: 4.2M (+12%)",
    "git commit -m 'fix'", "ls -la /tmp | wc -l", "Answer: 42", "v1.2.3 -> v1.3.0", "0x1F + 0x01 = 0x20",
    "Area = pi * r^2 = 78.54", "A: 3; B: 5; C: 8", "y = mx + b", "x++; y--;", "#include <stdio.h>",
    "Mean of 2, 4, 9: 5", "E = mc^2",
]


def accuracy_rows() -> tuple[list[str], list[str], list[str], list[str]]:
    """(pair texts, their languages, single sentences, their languages)."""
    pairs, pair_langs, singles, single_langs = [], [], [], []
    for lang, sents in SENTENCES.items():
        for i, a in enumerate(sents):
            singles.append(a)
            single_langs.append(lang)
            for j, b in enumerate(sents):
                if i != j:
                    pairs.append(f"{a}\n{b}")
                    pair_langs.append(lang)
    return pairs, pair_langs, singles, single_langs


def langid_reference():  # langid's LanguageIdentifier
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, help="realistic rows for the speed comparison (default 5K)")
    ap.add_argument("--small", action="store_true", help="1K rows for the speed comparison")
    args = ap.parse_args()
    args.rows = args.rows or (1000 if args.small else 5000)
    ref = langid_reference()
    ref.classify("warm up")
    ours.languages(["warm up"])
    rows = flan_rows(args.rows)
    speed_rows = [f"{i}\n{o}" for i, o in zip(rows["instruction"], rows["output"], strict=True)]
    print(f"load average {os.getloadavg()[0]:.1f}; speed on {len(speed_rows):,} FLAN-style rows "
          f"({sum(len(t.split()) for t in speed_rows) / len(speed_rows):.0f} words)")
    times = {}
    for name, fn in [("ours (labels, batch)", ours.languages),
                     ("ours (label + probability)", lambda t: ours.identify(t)[0]),
                     ("langid", lambda t: [ref.classify(x)[0] for x in t])]:
        start, cpu = time.perf_counter(), time.process_time()
        fn(speed_rows)
        wall, times[name] = time.perf_counter() - start, time.process_time() - cpu
        print(f"{name:<28} {len(speed_rows) / wall:>10,.0f} rows/s wall, "
              f"{times[name] / len(speed_rows) * 1e6:>7,.0f} CPU us/row")
    print(f"speed-up vs langid (CPU time): {times['langid'] / times['ours (labels, batch)']:.0f}x (labels), "
          f"{times['langid'] / times['ours (label + probability)']:.0f}x (with probability)")
    pairs, pair_langs, singles, single_langs = accuracy_rows()
    print(f"accuracy on {len(pairs)} two-sentence rows / {len(singles)} single sentences, 16 languages:")
    for name, fn in [("ours", ours.languages), ("langid", lambda t: [ref.classify(x)[0] for x in t])]:
        acc = [sum(p == t for p, t in zip(fn(x), y, strict=True)) / len(y)
               for x, y in ((pairs, pair_langs), (singles, single_langs))]
        wrong = sorted({f"{t}->{p}" for p, t in zip(fn(singles), single_langs, strict=True) if p != t})
        print(f"  {name:<7} pairs {acc[0]:.3f}  singles {acc[1]:.3f}  errors on singles: {', '.join(wrong) or '-'}")
    ref_rejects = [t for t in NUMERIC if ref.classify(t)[0] != "en"]
    bare = [t for t, lang in zip(NUMERIC, ours.languages(NUMERIC), strict=True) if lang != "en"]
    rules = {"min_letters": HeuristicsConfig().language_min_letters,
             "min_confidence": HeuristicsConfig().language_min_confidence}
    ruled = ours.foreign(NUMERIC, ["en"], **rules)
    print(f"numeric/code English rows rejected (of {len(NUMERIC)}): langid {len(ref_rejects)}, ours without "
          f"rules {len(bare)}, ours with the filter's rules {rules}: {len(ruled)}")
    for label, texts, langs in (("pairs", pairs, pair_langs), ("singles", singles, single_langs)):
        other = [t for t, lang in zip(texts, langs, strict=True) if lang != "en"]
        print(f"  non-English {label} still rejected with those rules: "
              f"{len(ours.foreign(other, ['en'], **rules))} of {len(other)}")


if __name__ == "__main__":
    main()
