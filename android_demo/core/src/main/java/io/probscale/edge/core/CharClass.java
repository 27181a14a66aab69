package io.probscale.edge.core;

import java.util.Arrays;

/** Sorted code-point range sets parsed from {@link BertCharTables}; membership by binary search. */
final class CharClass {
    static final CharClass REMOVED = new CharClass(BertCharTables.REMOVED);
    static final CharClass CLEAN_SPACE = new CharClass(BertCharTables.CLEAN_SPACE);
    static final CharClass SPLIT_SPACE = new CharClass(BertCharTables.SPLIT_SPACE);
    static final CharClass NONSPACING_MARK = new CharClass(BertCharTables.NONSPACING_MARK);
    static final CharClass PUNCTUATION = new CharClass(BertCharTables.PUNCTUATION);
    static final CharClass CHINESE = new CharClass(BertCharTables.CHINESE);

    private final int[] starts;
    private final int[] ends;

    CharClass(String spec) {
        String[] parts = spec.isEmpty() ? new String[0] : spec.split(",");
        starts = new int[parts.length];
        ends = new int[parts.length];
        for (int k = 0; k < parts.length; k++) {
            int dash = parts[k].indexOf('-');
            if (dash < 0) {
                starts[k] = ends[k] = Integer.parseInt(parts[k], 16);
            } else {
                starts[k] = Integer.parseInt(parts[k].substring(0, dash), 16);
                ends[k] = Integer.parseInt(parts[k].substring(dash + 1), 16);
            }
            if (k > 0 && starts[k] <= ends[k - 1]) {
                throw new IllegalStateException("character table is not sorted at " + parts[k]);
            }
        }
    }

    boolean contains(int cp) {
        int k = Arrays.binarySearch(starts, cp);
        if (k >= 0) {
            return true;
        }
        k = -k - 2; // last range starting before cp
        return k >= 0 && cp <= ends[k];
    }
}
