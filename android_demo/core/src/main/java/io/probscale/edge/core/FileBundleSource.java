package io.probscale.edge.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** A bundle folder on the file system. */
public final class FileBundleSource implements BundleSource {
    private final File root;

    public FileBundleSource(File root) {
        this.root = root;
    }

    @Override
    public InputStream open(String name) throws IOException {
        return new FileInputStream(new File(root, name));
    }

    @Override
    public List<String> list() {
        List<String> out = new ArrayList<String>();
        walk(root, "", out);
        Collections.sort(out);
        return out;
    }

    private static void walk(File dir, String rel, List<String> out) {
        File[] kids = dir.listFiles();
        if (kids == null) {
            return;
        }
        for (File f : kids) {
            String name = rel.isEmpty() ? f.getName() : rel + "/" + f.getName();
            if (f.isDirectory()) {
                walk(f, name, out);
            } else if (f.isFile()) {
                out.add(name);
            }
        }
    }

    @Override
    public String describe() {
        return root.getPath();
    }
}
