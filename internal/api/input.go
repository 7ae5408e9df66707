package api

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"
)

// checkInput refuses requests whose URL path or query holds a NUL character or bytes that are not UTF-8
// (`/v1/nodes/a%00b`, `?after=%ff`): they are nobody's names, and PostgreSQL refuses them as text, which would
// answer 500. Bodies are checked where they are decoded (core.DecodeAt).
func checkInput(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bad := badText(r.URL.Path); bad != "" {
			writeError(w, http.StatusBadRequest, "bad_request",
				fmt.Sprintf("the URL path %.60q %s; names are text without NUL", r.URL.Path, bad), nil)
			return
		}
		q := r.URL.Query()
		keys := make([]string, 0, len(q))
		for k := range q {
			keys = append(keys, k)
		}
		sort.Strings(keys) // the same request always names the same parameter
		for _, k := range keys {
			if bad := badText(k); bad != "" {
				writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("the query parameter name %.60q %s", k, bad),
					[]Problem{{Path: k, Message: bad}})
				return
			}
			for _, v := range q[k] {
				if bad := badText(v); bad != "" {
					writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("query parameter %s: %.60q %s", k, v, bad),
						[]Problem{{Path: k, Message: bad}})
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// badText says what is wrong with s as text, or "" when nothing is.
func badText(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL character"
	}
	return ""
}
