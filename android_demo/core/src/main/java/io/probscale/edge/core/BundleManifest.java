package io.probscale.edge.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** The parts of a bundle's manifest.json this app uses (format_version 1, see runtime/bundle.py). */
public final class BundleManifest {
    public static final int FORMAT_VERSION = 1;
    public static final String MANIFEST = "manifest.json";

    /** One entry of manifest "files": expected sha256 (lower-case hex) and size. */
    public static final class FileEntry {
        public final String sha256;
        public final long bytes;

        FileEntry(String sha256, long bytes) {
            this.sha256 = sha256;
            this.bytes = bytes;
        }
    }

    public final int formatVersion;
    public final List<String> labels;
    public final String modelFile;
    public final String modelFormat;
    public final String precision;
    public final List<String> inputs;
    public final List<String> outputs;
    public final String tokenizerFile;
    public final String vocabFile;
    public final int maxLength;
    public final int padId;
    public final boolean doLowerCase;
    public final Map<String, FileEntry> files;

    private BundleManifest(Map<String, Object> m) throws BundleException {
        Object fv = m.get("format_version");
        if (!(fv instanceof Long)) {
            throw new BundleException("manifest.json has no format_version", "rebuild the bundle with `probscale-edge build`");
        }
        formatVersion = ((Long) fv).intValue();
        if (formatVersion > FORMAT_VERSION) {
            throw new BundleException("bundle format " + formatVersion + " is newer than this app supports (" + FORMAT_VERSION + ")",
                    "update the app, or rebuild the bundle with a matching probscale-edge");
        }
        labels = strings(m.get("labels"), "labels");
        if (labels.isEmpty()) {
            throw new BundleException("manifest.json lists no labels", "rebuild the bundle");
        }
        Map<String, Object> model = section(m, "model");
        modelFile = str(model, "file", "model.file", null);
        modelFormat = str(model, "format", "model.format", "onnx");
        precision = str(model, "precision", "model.precision", "fp32");
        inputs = model.containsKey("inputs") ? strings(model.get("inputs"), "model.inputs")
                : Collections.unmodifiableList(java.util.Arrays.asList("input_ids", "attention_mask", "token_type_ids"));
        outputs = model.containsKey("outputs") ? strings(model.get("outputs"), "model.outputs")
                : Collections.singletonList("logits");
        Map<String, Object> tok = section(m, "tokenizer");
        tokenizerFile = str(tok, "file", "tokenizer.file", null);
        Object vf = tok.get("vocab_file");
        vocabFile = vf instanceof String ? (String) vf : null;
        maxLength = intOr(tok.get("max_length"), 128);
        padId = intOr(tok.get("pad_id"), 0);
        doLowerCase = !Boolean.FALSE.equals(tok.get("do_lower_case"));
        if (maxLength < 2) {
            throw new BundleException("tokenizer.max_length " + maxLength + " is too small", "rebuild the bundle");
        }
        Object fo = m.get("files");
        if (!(fo instanceof Map) || ((Map<?, ?>) fo).isEmpty()) {
            throw new BundleException("manifest.json lists no files", "rebuild the bundle");
        }
        Map<String, FileEntry> f = new LinkedHashMap<String, FileEntry>();
        for (Map.Entry<?, ?> e : ((Map<?, ?>) fo).entrySet()) {
            String name = String.valueOf(e.getKey());
            if (!safePath(name)) {
                throw new BundleException("manifest lists an unsafe path '" + name + "'", "rebuild the bundle; do not edit manifest.json");
            }
            if (!(e.getValue() instanceof Map)) {
                throw new BundleException("manifest entry for " + name + " is not an object", "rebuild the bundle");
            }
            Map<?, ?> meta = (Map<?, ?>) e.getValue();
            Object sha = meta.get("sha256");
            Object bytes = meta.get("bytes");
            if (!(sha instanceof String) || !((String) sha).matches("[0-9a-fA-F]{64}") || !(bytes instanceof Long)) {
                throw new BundleException("manifest entry for " + name + " has no valid sha256/bytes", "rebuild the bundle");
            }
            f.put(name, new FileEntry(((String) sha).toLowerCase(java.util.Locale.ROOT), (Long) bytes));
        }
        files = Collections.unmodifiableMap(f);
        if (!files.containsKey(modelFile)) {
            throw new BundleException("model file " + modelFile + " is not listed in manifest files", "rebuild the bundle");
        }
        if (!files.containsKey(tokenizerFile) && (vocabFile == null || !files.containsKey(vocabFile))) {
            throw new BundleException("tokenizer file " + tokenizerFile + " is not listed in manifest files", "rebuild the bundle");
        }
    }

    /** Parses manifest.json text. */
    public static BundleManifest parse(String json) throws BundleException {
        Object root;
        try {
            root = Json.parse(json);
        } catch (IllegalArgumentException e) {
            throw new BundleException("manifest.json is not valid JSON (" + e.getMessage() + ")", "rebuild the bundle");
        }
        if (!(root instanceof Map)) {
            throw new BundleException("manifest.json is not a JSON object", "rebuild the bundle");
        }
        try {
            return new BundleManifest(Json.obj(root, "manifest"));
        } catch (ClassCastException | IllegalArgumentException e) {
            throw new BundleException("manifest.json has an unexpected layout (" + e.getMessage() + ")", "rebuild the bundle");
        }
    }

    static boolean safePath(String name) {
        if (name.isEmpty() || name.startsWith("/") || name.startsWith("\\") || name.contains("\\") || name.contains(":")) {
            return false;
        }
        for (String part : name.split("/")) {
            if (part.equals("..") || part.isEmpty()) {
                return false;
            }
        }
        return true;
    }

    private static Map<String, Object> section(Map<String, Object> m, String key) throws BundleException {
        Object v = m.get(key);
        if (!(v instanceof Map)) {
            throw new BundleException("manifest.json has no '" + key + "' section", "rebuild the bundle");
        }
        return Json.obj(v, key);
    }

    private static String str(Map<String, Object> m, String key, String where, String dflt) throws BundleException {
        Object v = m.get(key);
        if (v instanceof String) {
            return (String) v;
        }
        if (dflt != null && v == null) {
            return dflt;
        }
        throw new BundleException("manifest.json has no " + where, "rebuild the bundle");
    }

    private static int intOr(Object v, int dflt) {
        return v instanceof Number ? ((Number) v).intValue() : dflt;
    }

    private static List<String> strings(Object v, String where) throws BundleException {
        if (!(v instanceof List)) {
            throw new BundleException("manifest.json " + where + " is not a list", "rebuild the bundle");
        }
        List<String> out = new ArrayList<String>();
        for (Object o : (List<?>) v) {
            out.add(String.valueOf(o));
        }
        return Collections.unmodifiableList(out);
    }
}
