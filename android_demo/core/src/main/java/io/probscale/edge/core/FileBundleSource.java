package io.probscale.edge.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A bundle folder on the file system. Holds regular files and folders only: a symbolic link (to a file or a
 * folder, inside or outside the bundle) or a special file (FIFO, socket, device) is refused, when listed and when
 * opened (plain Java 8 without java.nio.file, which Android has only from API 26: a link is an entry whose
 * canonical path is not its parent's canonical path plus its name).
 */
public final class FileBundleSource implements BundleSource {
    private static final int MAX_ENTRIES = 10000;
    private static final int MAX_DEPTH = 8;
    private final File root;

    public FileBundleSource(File root) {
        this.root = root;
    }

    @Override
    public InputStream open(String name) throws IOException {
        if (!BundleManifest.safePath(name)) {
            throw new IOException("unsafe path '" + name + "'");
        }
        File f = root;
        for (String part : name.split("/")) {
            f = new File(f, part);
            if (isLink(f)) {
                throw new IOException(name + " is a symbolic link");
            }
        }
        if (!f.exists()) {
            throw new FileNotFoundException(name);
        }
        if (!f.isFile()) {
            throw new IOException(name + " is not a regular file");
        }
        return new FileInputStream(f);
    }

    /** Whether the last part of {@code f} is a symbolic link (a broken link is caught as "not a regular file"). */
    static boolean isLink(File f) throws IOException {
        File parent = f.getAbsoluteFile().getParentFile();
        if (parent == null) {
            return false;
        }
        File expected = new File(parent.getCanonicalFile(), f.getName());
        return !expected.getCanonicalFile().equals(expected);
    }

    @Override
    public List<String> list() throws IOException {
        List<String> out = new ArrayList<String>();
        walk(root, "", 0, out);
        Collections.sort(out);
        return out;
    }

    private static void walk(File dir, String rel, int depth, List<String> out) throws IOException {
        if (depth > MAX_DEPTH) {
            throw new IOException("folder " + rel + " is nested more than " + MAX_DEPTH + " levels deep");
        }
        File[] kids = dir.listFiles();
        if (kids == null) {
            throw new IOException("cannot list " + dir);
        }
        for (File f : kids) {
            String name = rel.isEmpty() ? f.getName() : rel + "/" + f.getName();
            if (out.size() > MAX_ENTRIES) {
                throw new IOException("more than " + MAX_ENTRIES + " files");
            }
            if (isLink(f)) {
                throw new IOException("bundle entry " + name + " is a symbolic link");
            } else if (f.isDirectory()) {
                walk(f, name, depth + 1, out);
            } else if (f.isFile()) {
                out.add(name);
            } else {
                throw new IOException("bundle entry " + name + " is not a regular file (a FIFO, socket or device)");
            }
        }
    }

    @Override
    public String describe() {
        return root.getPath();
    }
}
