package phoenix

// A minimal validating JSON scanner. It exists so that decoding a message
// is one pass over the bytes with no allocation: encoding/json would either
// allocate interface values (Unmarshal into []any) or need a second pass to
// locate the fields after json.Valid. The grammar is RFC 8259; UTF-8 is not
// checked here because Decode checks the whole text once up front.

// maxDepth matches encoding/json's nesting limit so that the scanner and
// json.Valid agree on every input (the fuzz test checks this), and bounds
// the recursion an attacker can cause.
const maxDepth = 10000

// plain marks bytes that can appear unescaped inside a JSON string and need
// no special handling: everything except controls, '"' and '\\'.
var plain = func() (t [256]bool) {
	for i := 0x20; i < 256; i++ {
		t[i] = i != '"' && i != '\\'
	}
	return t
}()

func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString scans the string whose opening quote is at data[i]. It returns
// the index just past the closing quote and whether the string contains
// escapes (which decide between copying the bytes and unescaping them).
func scanString(data []byte, i int) (end int, esc, ok bool) {
	i++
	for i < len(data) {
		c := data[i]
		if plain[c] {
			i++
			continue
		}
		switch c {
		case '"':
			return i + 1, esc, true
		case '\\':
			esc = true
			i++
			if i >= len(data) {
				return 0, false, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(data) {
					return 0, false, false
				}
				for _, h := range data[i+1 : i+5] {
					if !isHex(h) {
						return 0, false, false
					}
				}
				i += 5
			default:
				return 0, false, false
			}
		default: // control character
			return 0, false, false
		}
	}
	return 0, false, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipValue validates the JSON value starting at data[i] (no leading
// whitespace) and returns the index just past it. depth is the number of
// containers already open around the value.
func skipValue(data []byte, i, depth int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}
	switch c := data[i]; c {
	case '"':
		end, _, ok := scanString(data, i)
		return end, ok
	case '{':
		return skipObject(data, i, depth+1)
	case '[':
		return skipArray(data, i, depth+1)
	case 't':
		return skipLiteral(data, i, "true")
	case 'f':
		return skipLiteral(data, i, "false")
	case 'n':
		return skipLiteral(data, i, "null")
	default:
		if c == '-' || isDigit(c) {
			return skipNumber(data, i)
		}
		return 0, false
	}
}

func skipLiteral(data []byte, i int, lit string) (int, bool) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

func skipNumber(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i >= len(data):
		return 0, false
	case data[i] == '0':
		i++
	case isDigit(data[i]):
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	default:
		return 0, false
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			return 0, false
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			return 0, false
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	return i, true
}

// skipArray scans the array opening at data[i]; depth already counts it.
func skipArray(data []byte, i, depth int) (int, bool) {
	if depth > maxDepth {
		return 0, false
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = skipValue(data, i, depth); !ok {
			return 0, false
		}
		i = skipWS(data, i)
		if i >= len(data) {
			return 0, false
		}
		switch data[i] {
		case ',':
			i = skipWS(data, i+1)
		case ']':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// skipObject scans the object opening at data[i]; depth already counts it.
func skipObject(data []byte, i, depth int) (int, bool) {
	if depth > maxDepth {
		return 0, false
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return 0, false
		}
		var ok bool
		if i, _, ok = scanString(data, i); !ok {
			return 0, false
		}
		i = skipWS(data, i)
		if i >= len(data) || data[i] != ':' {
			return 0, false
		}
		if i, ok = skipValue(data, skipWS(data, i+1), depth); !ok {
			return 0, false
		}
		i = skipWS(data, i)
		if i >= len(data) {
			return 0, false
		}
		switch data[i] {
		case ',':
			i = skipWS(data, i+1)
		case '}':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// validJSON reports whether data is exactly one JSON value with optional
// surrounding whitespace, like json.Valid.
func validJSON(data []byte) bool {
	i, ok := skipValue(data, skipWS(data, 0), 0)
	return ok && skipWS(data, i) == len(data)
}
