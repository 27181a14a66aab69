package io.probscale.edge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.BufferedReader;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.Charset;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;

import org.junit.Test;

/**
 * Compares Java token ids with vectors written by tools/make_vectors.py from the Python `tokenizers`
 * library. The folder comes from -Dvectors.dir (run_host_tests.sh sets it).
 * Prints "TOKENIZER_VECTORS_MATCHED matched/total" for run_host_tests.sh and tests/test_android_host.py.
 */
public class TokenizerVectorsTest {
    private static final Charset UTF8 = Charset.forName("UTF-8");

    static String read(File f) throws IOException {
        byte[] b = new byte[(int) f.length()];
        FileInputStream in = new FileInputStream(f);
        try {
            int off = 0;
            while (off < b.length) {
                int r = in.read(b, off, b.length - off);
                if (r < 0) {
                    break;
                }
                off += r;
            }
        } finally {
            in.close();
        }
        return new String(b, UTF8);
    }

    @Test
    public void javaTokenIdsEqualPythonTokenizers() throws Exception {
        String dir = System.getProperty("vectors.dir");
        assertTrue("set -Dvectors.dir to the folder written by tools/make_vectors.py", dir != null);
        File[] files = new File(dir).listFiles();
        assertTrue("no vectors in " + dir, files != null);
        Arrays.sort(files);
        System.out.println(); // start on a fresh line after JUnit's progress dots
        long total = 0;
        long matched = 0;
        int shown = 0;
        int nFiles = 0;
        for (File f : files) {
            if (!f.getName().endsWith(".tsv")) {
                continue;
            }
            nFiles++;
            BufferedReader r = new BufferedReader(new InputStreamReader(new FileInputStream(f), UTF8));
            try {
                String header = r.readLine();
                BertTokenizer tok;
                if (header.startsWith("#tokenizer_json ")) {
                    tok = BertTokenizer.fromTokenizerJson(read(new File(header.substring(16))), 128);
                } else if (header.startsWith("#vocab_txt ")) {
                    tok = BertTokenizer.fromVocabTxt(read(new File(header.substring(11))), true, 128);
                } else {
                    throw new AssertionError("bad header in " + f + ": " + header);
                }
                long fileTotal = 0;
                long fileMatched = 0;
                String line;
                while ((line = r.readLine()) != null) {
                    String[] parts = line.split("\t", -1);
                    String text = new String(Base64.getDecoder().decode(parts[1]), UTF8);
                    String[] idStr = parts[2].split(" ");
                    long[] want = new long[idStr.length];
                    for (int k = 0; k < idStr.length; k++) {
                        want[k] = Long.parseLong(idStr[k]);
                    }
                    Encoding enc = tok.encode(text);
                    fileTotal++;
                    boolean ok = Arrays.equals(want, enc.inputIds) && enc.attentionMask.length == want.length
                            && enc.tokenTypeIds.length == want.length;
                    for (long m : enc.attentionMask) {
                        ok &= m == 1;
                    }
                    for (long t : enc.tokenTypeIds) {
                        ok &= t == 0;
                    }
                    if (ok) {
                        fileMatched++;
                    } else if (shown++ < 25) {
                        System.out.println("MISMATCH " + f.getName() + " " + parts[0] + " text=" + escape(text)
                                + "\n  python=" + Arrays.toString(want) + "\n  java  =" + Arrays.toString(enc.inputIds)
                                + "\n  normalized=" + escape(tok.normalize(text)));
                    }
                }
                System.out.println("TOKENIZER_FILE " + f.getName() + " " + fileMatched + "/" + fileTotal);
                total += fileTotal;
                matched += fileMatched;
            } finally {
                r.close();
            }
        }
        System.out.println("TOKENIZER_VECTORS_MATCHED " + matched + "/" + total);
        assertTrue("expected vector files in " + dir, nFiles >= 2);
        assertTrue("expected at least 1000 vectors, got " + total, total >= 1000);
        assertEquals("token ids differing from Python tokenizers", total, matched);
    }

    static String escape(String s) {
        StringBuilder b = new StringBuilder();
        for (int k = 0; k < s.length() && k < 300; ) {
            int cp = s.codePointAt(k);
            k += Character.charCount(cp);
            if (cp < 0x20 || cp > 0x7e) {
                b.append(String.format("\\u{%x}", cp));
            } else {
                b.appendCodePoint(cp);
            }
        }
        return b.toString();
    }

    @Test
    public void basicExamples() {
        java.util.Map<String, Integer> v = new java.util.HashMap<String, Integer>();
        String[] words = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello", "!", "cafe", "中"};
        for (int k = 0; k < words.length; k++) {
            v.put(words[k], k);
        }
        BertTokenizer.Options o = new BertTokenizer.Options();
        o.maxLength = 6;
        BertTokenizer t = new BertTokenizer(v, o);
        assertEquals(Arrays.asList(5, 6, 7), t.tokenizeToIds("UNAFFABLE"));
        assertEquals(Arrays.asList(8, 9, 10, 11, 1), t.tokenizeToIds("hello! Café中x"));
        assertEquals(Arrays.asList(8, 4, 8), t.tokenizeToIds("hello[MASK]hello"));
        assertEquals(Arrays.asList(1), t.tokenizeToIds("unaffablex"));
        // truncation keeps max_length - 2 pieces between [CLS] and [SEP]
        assertTrue(Arrays.equals(new long[] {2, 8, 8, 8, 8, 3}, t.encode("hello hello hello hello hello").inputIds));
        assertTrue(t.encode("hello hello hello hello hello").truncated);
        assertTrue(Arrays.equals(new long[] {2, 3}, t.encode("").inputIds));
        List<String> words2 = t.preTokenize(t.normalize("A\u0301b,\tc\u00a0d"));
        assertEquals(Arrays.asList("ab", ",", "c", "d"), words2);
    }
}
