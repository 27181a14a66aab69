package io.probscale.edge.core;

import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * BERT WordPiece tokenizer in plain Java, matching Hugging Face {@code tokenizers}
 * (BertNormalizer + BertPreTokenizer + WordPiece + [CLS]/[SEP] template) token for token.
 *
 * <p>Pipeline for one text: split out special tokens written literally ("[MASK]"); for the rest,
 * clean (drop control/format chars, whitespace to ' '), pad CJK ideographs with spaces, NFD and
 * drop non-spacing marks (accent stripping), lower-case per code point, split on whitespace and
 * punctuation, then greedy longest-match WordPiece with "##" continuations ([UNK] for a word with
 * an unmatchable piece or longer than max_input_chars_per_word). Finally truncate to
 * max_length - 2 pieces and wrap in [CLS] ... [SEP].
 *
 * <p>Character classes come from {@link BertCharTables} (measured from the Python library), so the
 * result does not depend on the Unicode version of the phone. NFD and lower-casing use the
 * platform (java.text.Normalizer, String.toLowerCase(Locale.ROOT)).
 */
public final class BertTokenizer {
    private final Map<String, Integer> vocab;
    private final int unkId;
    private final int clsId;
    private final int sepId;
    private final String prefix;
    private final int maxInputCharsPerWord;
    private final boolean cleanText;
    private final boolean handleChineseChars;
    private final boolean stripAccents;
    private final boolean lowercase;
    private final int maxLength;
    private final List<String> specialTexts; // longest first
    private final Map<String, Integer> specialIds;

    /** Options for a tokenizer; the defaults are BERT uncased. */
    public static final class Options {
        public boolean cleanText = true;
        public boolean handleChineseChars = true;
        public boolean stripAccents = true;
        public boolean lowercase = true;
        public String unkToken = "[UNK]";
        public String clsToken = "[CLS]";
        public String sepToken = "[SEP]";
        public String continuingSubwordPrefix = "##";
        public int maxInputCharsPerWord = 100;
        public int maxLength = 128;
        /** Tokens matched verbatim in the raw text (Hugging Face "added tokens"); null = BERT's five specials. */
        public Map<String, Integer> addedTokens;
    }

    public BertTokenizer(Map<String, Integer> vocab, Options o) {
        this.vocab = vocab;
        this.unkId = requireId(vocab, o.unkToken);
        this.clsId = requireId(vocab, o.clsToken);
        this.sepId = requireId(vocab, o.sepToken);
        this.prefix = o.continuingSubwordPrefix;
        this.maxInputCharsPerWord = o.maxInputCharsPerWord;
        this.cleanText = o.cleanText;
        this.handleChineseChars = o.handleChineseChars;
        this.stripAccents = o.stripAccents;
        this.lowercase = o.lowercase;
        this.maxLength = o.maxLength;
        Map<String, Integer> added = o.addedTokens;
        if (added == null) {
            added = new HashMap<String, Integer>();
            for (String t : new String[] {"[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]"}) {
                Integer id = vocab.get(t);
                if (id != null) {
                    added.put(t, id);
                }
            }
        }
        this.specialIds = new HashMap<String, Integer>(added);
        List<String> texts = new ArrayList<String>();
        for (String t : added.keySet()) {
            if (!t.isEmpty()) {
                texts.add(t);
            }
        }
        Collections.sort(texts, new Comparator<String>() {
            @Override
            public int compare(String a, String b) {
                return b.length() != a.length() ? b.length() - a.length() : a.compareTo(b);
            }
        });
        this.specialTexts = texts;
    }

    private static int requireId(Map<String, Integer> vocab, String token) {
        Integer id = vocab.get(token);
        if (id == null) {
            throw new IllegalArgumentException("the vocabulary has no " + token + " token");
        }
        return id;
    }

    // ------------------------------------------------------------------ loading

    /** Reads a vocab.txt (one token a line, id = line number). */
    public static Map<String, Integer> readVocabTxt(String text) {
        Map<String, Integer> vocab = new HashMap<String, Integer>();
        int id = 0;
        int start = 0;
        int n = text.length();
        while (start < n) {
            int nl = text.indexOf('\n', start);
            int end = nl < 0 ? n : nl;
            vocab.put(rtrim(text.substring(start, end)), id++);
            start = end + 1;
        }
        return vocab;
    }

    private static String rtrim(String s) {
        int end = s.length();
        while (end > 0) {
            int cp = s.codePointBefore(end);
            if (cp == '\r' || CharClass.SPLIT_SPACE.contains(cp)) {
                end -= Character.charCount(cp);
            } else {
                break;
            }
        }
        return s.substring(0, end);
    }

    /** A BERT-uncased style tokenizer over a vocab.txt (what {@code BertWordPieceTokenizer(vocab)} does in Python). */
    public static BertTokenizer fromVocabTxt(String vocabText, boolean lowercase, int maxLength) {
        Options o = new Options();
        o.lowercase = lowercase;
        o.stripAccents = lowercase;
        o.maxLength = maxLength;
        return new BertTokenizer(readVocabTxt(vocabText), o);
    }

    /** Builds the tokenizer a Hugging Face tokenizer.json describes (WordPiece + BertNormalizer only). */
    public static BertTokenizer fromTokenizerJson(String json, int maxLength) {
        Map<String, Object> root = Json.obj(Json.parse(json), "tokenizer.json");
        Map<String, Object> model = Json.obj(root.get("model"), "tokenizer.json model");
        if (!"WordPiece".equals(model.get("type"))) {
            throw new IllegalArgumentException("tokenizer.json model type is " + model.get("type") + ", only WordPiece is supported");
        }
        Map<String, Object> rawVocab = Json.obj(model.get("vocab"), "tokenizer.json model.vocab");
        Map<String, Integer> vocab = new HashMap<String, Integer>(rawVocab.size() * 2);
        for (Map.Entry<String, Object> e : rawVocab.entrySet()) {
            vocab.put(e.getKey(), ((Number) e.getValue()).intValue());
        }
        Options o = new Options();
        o.maxLength = maxLength;
        if (model.get("unk_token") instanceof String) {
            o.unkToken = (String) model.get("unk_token");
        }
        if (model.get("continuing_subword_prefix") instanceof String) {
            o.continuingSubwordPrefix = (String) model.get("continuing_subword_prefix");
        }
        if (model.get("max_input_chars_per_word") instanceof Number) {
            o.maxInputCharsPerWord = ((Number) model.get("max_input_chars_per_word")).intValue();
        }
        Object nz = root.get("normalizer");
        if (nz != null) {
            Map<String, Object> n = Json.obj(nz, "tokenizer.json normalizer");
            if (!"BertNormalizer".equals(n.get("type"))) {
                throw new IllegalArgumentException("tokenizer.json normalizer is " + n.get("type") + ", only BertNormalizer is supported");
            }
            o.cleanText = !Boolean.FALSE.equals(n.get("clean_text"));
            o.handleChineseChars = !Boolean.FALSE.equals(n.get("handle_chinese_chars"));
            o.lowercase = !Boolean.FALSE.equals(n.get("lowercase"));
            Object sa = n.get("strip_accents");
            o.stripAccents = sa == null ? o.lowercase : Boolean.TRUE.equals(sa);
        } else {
            o.cleanText = o.handleChineseChars = o.stripAccents = o.lowercase = false;
        }
        Object pt = root.get("pre_tokenizer");
        if (pt != null && !"BertPreTokenizer".equals(Json.obj(pt, "pre_tokenizer").get("type"))) {
            throw new IllegalArgumentException("tokenizer.json pre_tokenizer is not BertPreTokenizer");
        }
        Object pp = root.get("post_processor");
        if (pp != null) {
            Map<String, Object> p = Json.obj(pp, "post_processor");
            if ("BertProcessing".equals(p.get("type"))) {
                o.sepToken = (String) Json.arr(p.get("sep"), "post_processor.sep").get(0);
                o.clsToken = (String) Json.arr(p.get("cls"), "post_processor.cls").get(0);
            } else if ("TemplateProcessing".equals(p.get("type"))) {
                List<Object> single = Json.arr(p.get("single"), "post_processor.single");
                if (single.size() != 3) {
                    throw new IllegalArgumentException("only the [CLS] $A [SEP] template is supported");
                }
                o.clsToken = (String) Json.obj(Json.obj(single.get(0), "template").get("SpecialToken"), "template[0]").get("id");
                o.sepToken = (String) Json.obj(Json.obj(single.get(2), "template").get("SpecialToken"), "template[2]").get("id");
            }
        }
        Object at = root.get("added_tokens");
        Map<String, Integer> added = new HashMap<String, Integer>();
        if (at != null) {
            for (Object t : Json.arr(at, "added_tokens")) {
                Map<String, Object> m = Json.obj(t, "added token");
                added.put((String) m.get("content"), ((Number) m.get("id")).intValue());
            }
        }
        o.addedTokens = added;
        return new BertTokenizer(vocab, o);
    }

    // ------------------------------------------------------------------ encoding

    public int maxLength() {
        return maxLength;
    }

    public int vocabSize() {
        return vocab.size();
    }

    /** Token ids with [CLS]/[SEP], truncated to max_length, plus mask and token types. */
    public Encoding encode(String text) {
        List<Integer> pieces = tokenizeToIds(text);
        int room = Math.max(0, maxLength - 2);
        boolean truncated = pieces.size() > room;
        int n = Math.min(pieces.size(), room);
        long[] ids = new long[n + 2];
        ids[0] = clsId;
        for (int k = 0; k < n; k++) {
            ids[k + 1] = pieces.get(k);
        }
        ids[n + 1] = sepId;
        return new Encoding(ids, truncated);
    }

    /** Word-piece ids of the text, without special tokens and without truncation. */
    public List<Integer> tokenizeToIds(String text) {
        List<Integer> out = new ArrayList<Integer>();
        int segStart = 0;
        int k = 0;
        int n = text.length();
        while (k < n) {
            String hit = null;
            if (!specialTexts.isEmpty()) {
                for (String t : specialTexts) {
                    if (text.startsWith(t, k)) {
                        hit = t;
                        break;
                    }
                }
            }
            if (hit != null) {
                tokenizeSegment(text.substring(segStart, k), out);
                out.add(specialIds.get(hit));
                k += hit.length();
                segStart = k;
            } else {
                k++;
            }
        }
        tokenizeSegment(text.substring(segStart), out);
        return out;
    }

    /** The normalized form of a text (BertNormalizer), exposed for debugging and tests. */
    public String normalize(String text) {
        StringBuilder b = new StringBuilder(text.length() + 8);
        for (int k = 0; k < text.length(); ) {
            int cp = text.codePointAt(k);
            k += Character.charCount(cp);
            if (cleanText) {
                if (cp >= 0xD800 && cp <= 0xDFFF) {
                    continue; // unpaired surrogate (cannot occur in Rust strings): drop like a control char
                }
                if (CharClass.REMOVED.contains(cp)) {
                    continue;
                }
                if (CharClass.CLEAN_SPACE.contains(cp)) {
                    b.append(' ');
                    continue;
                }
            }
            if (handleChineseChars && CharClass.CHINESE.contains(cp)) {
                b.append(' ').appendCodePoint(cp).append(' ');
            } else {
                b.appendCodePoint(cp);
            }
        }
        String s = b.toString();
        if (stripAccents) {
            String d = Normalizer.normalize(s, Normalizer.Form.NFD);
            StringBuilder f = new StringBuilder(d.length());
            for (int k = 0; k < d.length(); ) {
                int cp = d.codePointAt(k);
                k += Character.charCount(cp);
                if (!CharClass.NONSPACING_MARK.contains(cp)) {
                    f.appendCodePoint(cp);
                }
            }
            s = f.toString();
        }
        if (lowercase) {
            StringBuilder l = new StringBuilder(s.length());
            for (int k = 0; k < s.length(); ) {
                int cp = s.codePointAt(k);
                int len = Character.charCount(cp);
                if (cp < 0x80) {
                    l.append((char) (cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
                } else {
                    // per code point, like Rust's char::to_lowercase (no context-dependent final sigma)
                    l.append(s.substring(k, k + len).toLowerCase(Locale.ROOT));
                }
                k += len;
            }
            s = l.toString();
        }
        return s;
    }

    /** BertPreTokenizer: split on whitespace, and isolate every punctuation character. */
    public List<String> preTokenize(String normalized) {
        List<String> words = new ArrayList<String>();
        int start = -1;
        for (int k = 0; k < normalized.length(); ) {
            int cp = normalized.codePointAt(k);
            int len = Character.charCount(cp);
            if (CharClass.SPLIT_SPACE.contains(cp)) {
                if (start >= 0) {
                    words.add(normalized.substring(start, k));
                    start = -1;
                }
            } else if (CharClass.PUNCTUATION.contains(cp)) {
                if (start >= 0) {
                    words.add(normalized.substring(start, k));
                    start = -1;
                }
                words.add(normalized.substring(k, k + len));
            } else if (start < 0) {
                start = k;
            }
            k += len;
        }
        if (start >= 0) {
            words.add(normalized.substring(start));
        }
        return words;
    }

    private void tokenizeSegment(String segment, List<Integer> out) {
        if (segment.isEmpty()) {
            return;
        }
        for (String word : preTokenize(normalize(segment))) {
            wordPiece(word, out);
        }
    }

    /** Greedy longest-match-first WordPiece of one word; the whole word becomes [UNK] if any piece fails. */
    void wordPiece(String word, List<Integer> out) {
        int chars = word.codePointCount(0, word.length());
        if (chars > maxInputCharsPerWord) {
            out.add(unkId);
            return;
        }
        int mark = out.size();
        int start = 0;
        int n = word.length();
        while (start < n) {
            int end = n;
            Integer found = null;
            while (end > start) {
                String piece = word.substring(start, end);
                if (start > 0) {
                    piece = prefix + piece;
                }
                found = vocab.get(piece);
                if (found != null) {
                    break;
                }
                end = word.offsetByCodePoints(end, -1);
            }
            if (found == null) {
                while (out.size() > mark) {
                    out.remove(out.size() - 1);
                }
                out.add(unkId);
                return;
            }
            out.add(found);
            start = end;
        }
    }
}
