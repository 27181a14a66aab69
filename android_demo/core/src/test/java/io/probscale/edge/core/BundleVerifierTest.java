package io.probscale.edge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.ByteArrayInputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class BundleVerifierTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    static final String VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ngood\nbad\nmovie\n";

    static void write(File f, String text) throws IOException {
        FileOutputStream o = new FileOutputStream(f);
        try {
            o.write(text.getBytes("UTF-8"));
        } finally {
            o.close();
        }
    }

    static String sha(File f) throws IOException {
        return BundleVerifier.sha256(new java.io.FileInputStream(f));
    }

    /** Writes manifest.json and its digest manifest.sha256 (what runtime.bundle.write_manifest does). */
    static void writeManifest(File d, String text) throws IOException {
        write(new File(d, "manifest.json"), text);
        write(new File(d, "manifest.sha256"), sha(new File(d, "manifest.json")) + "  manifest.json\n");
    }

    static String manifest(File d) throws IOException {
        return TokenizerVectorsTest.read(new File(d, "manifest.json"));
    }

    /** A small bundle folder with a manifest whose checksums are right. */
    File bundle(String extraManifest) throws IOException {
        File d = tmp.newFolder();
        write(new File(d, "model.onnx"), "not really a model");
        write(new File(d, "vocab.txt"), VOCAB);
        write(new File(d, "labels.json"), "[\"negative\", \"positive\"]");
        StringBuilder files = new StringBuilder();
        for (String n : new String[] {"labels.json", "model.onnx", "vocab.txt"}) {
            File f = new File(d, n);
            if (files.length() > 0) {
                files.append(',');
            }
            files.append('"').append(n).append("\": {\"sha256\": \"").append(sha(f)).append("\", \"bytes\": ").append(f.length()).append('}');
        }
        writeManifest(d, "{\"format_version\": 1, \"labels\": [\"negative\", \"positive\"],"
                + " \"model\": {\"file\": \"model.onnx\", \"format\": \"onnx\", \"precision\": \"int8\","
                + " \"inputs\": [\"input_ids\", \"attention_mask\"], \"outputs\": [\"logits\"]},"
                + " \"tokenizer\": {\"file\": \"tokenizer.json\", \"vocab_file\": \"vocab.txt\", \"max_length\": 16,"
                + " \"pad_id\": 0, \"do_lower_case\": true, \"class\": \"BertTokenizerFast\"}" + extraManifest
                + ", \"files\": {" + files + "}}");
        return d;
    }

    @Test
    public void sha256KnownAnswer() throws IOException {
        assertEquals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                BundleVerifier.sha256(new ByteArrayInputStream("abc".getBytes("UTF-8"))));
        assertEquals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                BundleVerifier.sha256(new ByteArrayInputStream(new byte[0])));
    }

    @Test
    public void goodBundleVerifiesAndLoads() throws Exception {
        File d = bundle("");
        BundleVerifier.VerifiedBundle b = BundleVerifier.verify(new FileBundleSource(d), false);
        BundleManifest m = b.manifest;
        assertEquals(1, m.formatVersion);
        assertEquals(Arrays.asList("negative", "positive"), m.labels);
        assertEquals("model.onnx", m.modelFile);
        assertEquals("int8", m.precision);
        assertEquals(Arrays.asList("input_ids", "attention_mask"), m.inputs);
        assertEquals(16, m.maxLength);
        assertArrayEquals("not really a model".getBytes("UTF-8"), b.bytes("model.onnx"));
        // tokenizer.json is not in the bundle, so vocab.txt is used
        assertArrayEquals(new long[] {2, 5, 7, 3}, b.tokenizer().encode("Good MOVIE").inputIds);
    }

    @Test
    public void tamperedFileIsRefused() throws Exception {
        File d = bundle("");
        write(new File(d, "model.onnx"), "not really a modeL"); // same size, different bytes
        try {
            BundleVerifier.verify(new FileBundleSource(d), false);
            fail("a tampered model was accepted");
        } catch (BundleException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("model.onnx does not match its checksum"));
        }
        write(new File(d, "model.onnx"), "not really a model, longer");
        try {
            BundleVerifier.verify(new FileBundleSource(d), false);
            fail("a resized model was accepted");
        } catch (BundleException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("does not match its checksum"));
        }
    }

    @Test
    public void tamperedVocabIsRefused() throws Exception {
        File d = bundle("");
        write(new File(d, "vocab.txt"), VOCAB.replace("good", "evil"));
        try {
            BundleVerifier.verify(new FileBundleSource(d), false);
            fail("a tampered vocab was accepted");
        } catch (BundleException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("vocab.txt does not match"));
        }
    }

    @Test
    public void missingExtraAndManifestProblemsAreRefused() throws Exception {
        File d = bundle("");
        write(new File(d, "surprise.bin"), "x");
        expectRefusal(d, "not in its manifest");
        BundleVerifier.verify(new FileBundleSource(d), true); // allowed when asked
        File d2 = bundle("");
        assertTrue(new File(d2, "labels.json").delete());
        expectRefusal(d2, "labels.json is missing");
        File d3 = bundle("");
        assertTrue(new File(d3, "manifest.json").delete());
        expectRefusal(d3, "no manifest.json");
        File d4 = bundle("");
        write(new File(d4, "manifest.json"), "{\"format_version\": 1, \"files\": ");
        expectRefusal(d4, "not valid JSON");
        File d5 = bundle("");
        String m5 = TokenizerVectorsTest.read(new File(d5, "manifest.json")).replace("\"format_version\": 1", "\"format_version\": 2");
        write(new File(d5, "manifest.json"), m5);
        expectRefusal(d5, "newer than this app supports");
        File d6 = bundle("");
        String m6 = TokenizerVectorsTest.read(new File(d6, "manifest.json")).replace("\"labels.json\"", "\"../labels.json\"");
        writeManifest(d6, m6);
        expectRefusal(d6, "unsafe path");
    }

    @Test
    public void redirectedModelFileIsRefused() throws Exception {
        String[][] cases = {{"/tmp/elsewhere/other.onnx", "unsafe path"}, {"../../elsewhere/other.onnx", "unsafe path"},
            {"other.onnx", "is not one of the bundle's checksummed files"}};
        for (String[] c : cases) {
            File d = bundle("");
            writeManifest(d, manifest(d).replace("\"file\": \"model.onnx\"", "\"file\": \"" + c[0] + "\""));
            expectRefusal(d, c[1]);
        }
    }

    @Test
    public void labelsThatDisagreeWithLabelsJsonAreRefused() throws Exception {
        File d = bundle("");
        writeManifest(d, manifest(d).replace("\"labels\": [\"negative\", \"positive\"]", "\"labels\": [\"positive\", \"negative\"]"));
        expectRefusal(d, "labels.json and manifest.json disagree");
    }

    @Test
    public void manifestDigestMismatchIsRefused() throws Exception {
        File d = bundle("");
        // the labels reversed without recording the new digest
        write(new File(d, "manifest.json"), manifest(d).replace("[\"negative\", \"positive\"],", "[\"positive\", \"negative\"],"));
        expectRefusal(d, "manifest.json does not match its checksum in manifest.sha256");
        File d2 = bundle("");
        write(new File(d2, "manifest.json"), manifest(d2) + " ");
        expectRefusal(d2, "manifest.json does not match its checksum in manifest.sha256");
        File d3 = bundle("");
        assertTrue(new File(d3, "manifest.sha256").delete());
        expectRefusal(d3, "has no manifest.sha256");
        File d4 = bundle("");
        write(new File(d4, "manifest.sha256"), "not a digest");
        expectRefusal(d4, "is not one line");
    }

    @Test
    public void malformedManifestsAreRefused() throws Exception {
        String[][] cases = {
            {"\"max_length\": 16", "\"max_length\": 100000", "tokenizer.max_length is 100000"},
            {"\"max_length\": 16", "\"max_length\": \"16\"", "tokenizer.max_length"},
            {"\"labels\": [\"negative\", \"positive\"]", "\"labels\": []", "lists no labels"},
            {"\"labels\": [\"negative\", \"positive\"]", "\"labels\": [0, 1]", "not a list of strings"},
            {"\"labels\": [\"negative\", \"positive\"]", "\"labels\": [\"a\", \"a\"]", "not unique"},
            {"\"format_version\": 1,", "\"format_version\": 1, \"format_version\": 1,", "duplicate key"},
            {"\"format_version\": 1,", "\"x\": " + repeat("[", 80) + repeat("]", 80) + ", \"format_version\": 1,", "nesting deeper"},
        };
        for (String[] c : cases) {
            File d = bundle("");
            writeManifest(d, manifest(d).replace(c[0], c[1]));
            expectRefusal(d, c[2]);
        }
        File d = bundle("");
        String m = manifest(d);
        writeManifest(d, m.substring(0, m.indexOf(", \"files\": {")) + ", \"files\": [\"model.onnx\"]}");
        expectRefusal(d, "files is not an object");
        File d2 = bundle("");
        writeManifest(d2, "[1, 2]");
        expectRefusal(d2, "not a JSON object");
    }

    @Test
    public void linksAndSpecialFilesAreRefused() throws Exception {
        File outside = tmp.newFile("outside.txt");
        File d = bundle("");
        java.nio.file.Files.createSymbolicLink(new File(d, "notes.txt").toPath(), outside.toPath());
        expectRefusal(d, "notes.txt is a symbolic link");
        File d2 = bundle("");
        File real = tmp.newFile("model-copy.onnx");
        java.nio.file.Files.copy(new File(d2, "model.onnx").toPath(), real.toPath(), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        assertTrue(new File(d2, "model.onnx").delete());
        java.nio.file.Files.createSymbolicLink(new File(d2, "model.onnx").toPath(), real.toPath()); // same bytes
        expectRefusal(d2, "model.onnx is a symbolic link");
        File d3 = bundle("");
        java.nio.file.Files.createSymbolicLink(new File(d3, "data").toPath(), tmp.newFolder().toPath());
        expectRefusal(d3, "data is a symbolic link");
        File d4 = bundle("");
        Process p = new ProcessBuilder("mkfifo", new File(d4, "pipe").getPath()).start();
        if (p.waitFor() == 0) {
            expectRefusal(d4, "pipe is not a regular file");
        }
    }

    @Test
    public void theSignatureIsTheOneAllowedExtraFile() throws Exception {
        File d = bundle("");
        write(new File(d, "bundle.sig"), "{}");
        BundleVerifier.verify(new FileBundleSource(d), false);
        write(new File(d, "bundle.sig.bak"), "{}");
        expectRefusal(d, "not in its manifest: bundle.sig.bak");
    }

    static String repeat(String s, int n) {
        StringBuilder b = new StringBuilder();
        for (int k = 0; k < n; k++) {
            b.append(s);
        }
        return b.toString();
    }

    private static void expectRefusal(File d, String why) {
        try {
            BundleVerifier.verify(new FileBundleSource(d), false);
            fail("bundle accepted, expected: " + why);
        } catch (BundleException e) {
            assertTrue(e.getMessage(), e.getMessage().contains(why));
        }
    }

    @Test
    public void jsonRoundTrip() {
        Object v = Json.parse("{\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\n\\\"\\ud83d\\ude00\"], \"b\": {}, \"c\": 12345678901234}");
        Map<String, Object> m = Json.obj(v, "root");
        assertEquals(Arrays.asList(1L, -2500.0, true, false, null, "x\u00e9\n\"\ud83d\ude00"), m.get("a"));
        assertEquals(12345678901234L, m.get("c"));
        assertEquals(v, Json.parse(Json.write(v)));
        for (String bad : new String[] {"", "{", "[1,]", "{\"a\" 1}", "tru", "\"abc", "1 2", "{\"a\":1,}"}) {
            try {
                Json.parse(bad);
                fail("accepted " + bad);
            } catch (IllegalArgumentException expected) {
                // ok
            }
        }
        Map<String, Object> w = new LinkedHashMap<String, Object>();
        w.put("nan", Double.NaN);
        w.put("s", "tab\tq\"");
        assertEquals("{\n  \"nan\": null,\n  \"s\": \"tab\\tq\\\"\"\n}", Json.write(w));
    }
}
