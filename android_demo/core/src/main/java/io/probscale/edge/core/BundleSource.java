package io.probscale.edge.core;

import java.io.IOException;
import java.io.InputStream;
import java.util.List;

/** Where bundle files are read from: a folder on disk (host, tests) or the APK's assets (the app). */
public interface BundleSource {
    /** Opens a file by its manifest name ("model.onnx", "tokenizer.json", ...). */
    InputStream open(String name) throws IOException;

    /** Every file in the bundle (relative names, "/" separated), or null if the source cannot list. */
    List<String> list() throws IOException;

    /** Where the bundle is, for messages. */
    String describe();
}
