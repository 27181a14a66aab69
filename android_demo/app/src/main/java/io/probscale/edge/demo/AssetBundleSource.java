package io.probscale.edge.demo;

import android.content.res.AssetManager;

import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import io.probscale.edge.core.BundleSource;

/** A bundle packed into the APK under assets/bundle/ (see copyBundle in app/build.gradle). */
final class AssetBundleSource implements BundleSource {
    static final String ROOT = "bundle";
    private final AssetManager assets;

    AssetBundleSource(AssetManager assets) {
        this.assets = assets;
    }

    @Override
    public InputStream open(String name) throws IOException {
        return assets.open(ROOT + "/" + name, AssetManager.ACCESS_STREAMING);
    }

    @Override
    public List<String> list() throws IOException {
        List<String> out = new ArrayList<>();
        walk(ROOT, "", out);
        Collections.sort(out);
        return out;
    }

    private void walk(String path, String rel, List<String> out) throws IOException {
        String[] kids = assets.list(path);
        if (kids == null) {
            return;
        }
        for (String k : kids) {
            String child = path + "/" + k;
            String name = rel.isEmpty() ? k : rel + "/" + k;
            String[] grand = assets.list(child);
            if (grand != null && grand.length > 0) {
                walk(child, name, out); // APK assets have no empty folders, so a non-empty list means a folder
            } else {
                out.add(name);
            }
        }
    }

    @Override
    public String describe() {
        return "assets/" + ROOT;
    }
}
