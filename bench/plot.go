package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// plotRecord is what Plot reads from a fanout or storm JSON result line.
type plotRecord struct {
	Bench   string `json:"bench"`
	Systems []struct {
		System     string  `json:"system"`
		N          int     `json:"n"`
		RSSPerConn float64 `json:"rss_per_conn_bytes"`
		Rate       *struct {
			DeliveriesPerS float64 `json:"deliveries_per_s"`
		} `json:"rate"`
		Saturate *struct {
			DeliveriesPerS float64 `json:"deliveries_per_s"`
		} `json:"saturate"`
	} `json:"systems"`
}

// series is one system's points, averaged per N.
type series struct {
	name string
	pts  map[int][]float64
}

func (s *series) add(n int, v float64) {
	if s.pts == nil {
		s.pts = map[int][]float64{}
	}
	s.pts[n] = append(s.pts[n], v)
}

func (s *series) sorted() (xs, ys []float64) {
	var ns []int
	for n := range s.pts {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	for _, n := range ns {
		var sum float64
		for _, v := range s.pts[n] {
			sum += v
		}
		xs = append(xs, float64(n))
		ys = append(ys, sum/float64(len(s.pts[n])))
	}
	return xs, ys
}

// Plot draws, from fanout and storm JSON result lines, server RSS per
// connection (KiB) and deliveries/s (the saturation phase where there is
// one, else the fixed-rate phase) against N, one line per system, and
// returns the PNG.
func Plot(jsonl []byte) ([]byte, error) {
	mem := map[string]*series{}
	deliv := map[string]*series{}
	get := func(m map[string]*series, name string) *series {
		if m[name] == nil {
			m[name] = &series{name: name}
		}
		return m[name]
	}
	sc := bufio.NewScanner(bytes.NewReader(jsonl))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	lines := 0
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r plotRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("plot: line %d: %w", lines+1, err)
		}
		lines++
		for _, s := range r.Systems {
			if s.N <= 0 {
				continue
			}
			if s.RSSPerConn > 0 {
				get(mem, s.System).add(s.N, s.RSSPerConn/1024)
			}
			switch {
			case s.Saturate != nil && s.Saturate.DeliveriesPerS > 0:
				get(deliv, s.System).add(s.N, s.Saturate.DeliveriesPerS)
			case s.Rate != nil && s.Rate.DeliveriesPerS > 0:
				get(deliv, s.System).add(s.N, s.Rate.DeliveriesPerS)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(mem) == 0 && len(deliv) == 0 {
		return nil, fmt.Errorf("plot: no fanout or storm results in the input")
	}
	const w, h = 1200, 520
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fill(img, img.Bounds(), color.RGBA{255, 255, 255, 255})
	drawPanel(img, image.Rect(0, 0, w/2, h), "SERVER RSS PER CONNECTION (KIB)", mem)
	drawPanel(img, image.Rect(w/2, 0, w, h), "DELIVERIES/S (SATURATION, ELSE FIXED RATE)", deliv)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var plotColors = []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255}}

func drawPanel(img *image.RGBA, r image.Rectangle, title string, data map[string]*series) {
	black := color.RGBA{0, 0, 0, 255}
	grey := color.RGBA{220, 220, 220, 255}
	const scale = 2
	plot := image.Rect(r.Min.X+90, r.Min.Y+66, r.Max.X-30, r.Max.Y-70)
	drawText(img, r.Min.X+(r.Dx()-textWidth(title, scale))/2, r.Min.Y+14, title, scale, black)
	xl := "N (CONNECTIONS)"
	drawText(img, plot.Min.X+(plot.Dx()-textWidth(xl, scale))/2, r.Max.Y-26, xl, scale, black)

	names := make([]string, 0, len(data))
	var maxX, maxY float64
	for name, s := range data {
		names = append(names, name)
		xs, ys := s.sorted()
		for i := range xs {
			maxX = math.Max(maxX, xs[i])
			maxY = math.Max(maxY, ys[i])
		}
	}
	sort.Strings(names)
	if maxX == 0 {
		maxX = 1
	}
	if maxY == 0 {
		maxY = 1
	}
	xStep, xMax := niceAxis(maxX)
	yStep, yMax := niceAxis(maxY)
	px := func(x float64) int { return plot.Min.X + int(math.Round(x/xMax*float64(plot.Dx()))) }
	py := func(y float64) int { return plot.Max.Y - int(math.Round(y/yMax*float64(plot.Dy()))) }

	for y := 0.0; y <= yMax+yStep/2; y += yStep {
		yy := py(y)
		line(img, plot.Min.X, yy, plot.Max.X, yy, grey, 1)
		line(img, plot.Min.X-6, yy, plot.Min.X, yy, black, 1)
		lbl := tickLabel(y, yStep)
		drawText(img, plot.Min.X-10-textWidth(lbl, scale), yy-7, lbl, scale, black)
	}
	for x := 0.0; x <= xMax+xStep/2; x += xStep {
		xx := px(x)
		line(img, xx, plot.Max.Y, xx, plot.Max.Y+6, black, 1)
		lbl := tickLabel(x, xStep)
		drawText(img, xx-textWidth(lbl, scale)/2, plot.Max.Y+12, lbl, scale, black)
	}
	line(img, plot.Min.X, plot.Min.Y, plot.Min.X, plot.Max.Y, black, 2)
	line(img, plot.Min.X, plot.Max.Y, plot.Max.X, plot.Max.Y, black, 2)

	for i, name := range names {
		c := plotColors[i%len(plotColors)]
		xs, ys := data[name].sorted()
		for j := range xs {
			if j > 0 {
				line(img, px(xs[j-1]), py(ys[j-1]), px(xs[j]), py(ys[j]), c, 3)
			}
			fill(img, image.Rect(px(xs[j])-5, py(ys[j])-5, px(xs[j])+6, py(ys[j])+6), c)
		}
		// Legend: one row under the title, outside the plot area.
		lx := plot.Min.X + i*(textWidth(strings.Repeat("M", 12), scale)+40)
		ly := r.Min.Y + 38
		fill(img, image.Rect(lx, ly, lx+20, ly+14), c)
		drawText(img, lx+28, ly, name, scale, black)
	}
}

// niceAxis returns a tick step (1, 2 or 5 × 10^k) and an axis maximum,
// a multiple of the step, with about five ticks above v.
func niceAxis(v float64) (step, max float64) {
	raw := v / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	switch f := raw / mag; {
	case f <= 1:
		step = mag
	case f <= 2:
		step = 2 * mag
	case f <= 5:
		step = 5 * mag
	default:
		step = 10 * mag
	}
	return step, math.Ceil(v/step) * step
}

// tickLabel writes v compactly: 2.5, 250, 10K, 1.5M.
func tickLabel(v, step float64) string {
	suffix := ""
	switch {
	case math.Abs(v) >= 1e6 && step >= 1e5:
		v, step, suffix = v/1e6, step/1e6, "M"
	case math.Abs(v) >= 1e3 && step >= 100:
		v, step, suffix = v/1e3, step/1e3, "K"
	}
	prec := 0
	if step < 1 {
		prec = int(math.Ceil(-math.Log10(step)))
	}
	if step != math.Trunc(step) && prec == 0 {
		prec = 1
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + suffix
}

func textWidth(s string, scale int) int {
	n := len([]rune(s))
	if n == 0 {
		return 0
	}
	return (n*6 - 1) * scale
}

// drawText draws s with its top-left corner at (x, y).
func drawText(img *image.RGBA, x, y int, s string, scale int, c color.RGBA) {
	for _, ch := range s {
		g, ok := font5x7[unicode.ToUpper(ch)]
		if !ok {
			g = font5x7['?']
		}
		for row, bitsRow := range g {
			for col, b := range bitsRow {
				if b != ' ' {
					fill(img, image.Rect(x+col*scale, y+row*scale, x+(col+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += 6 * scale
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// line draws a segment of the given width (Bresenham, square pen).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA, width int) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	err := dx + dy
	lo := -(width - 1) / 2
	for i := 0; i < 1<<20; i++ { // bounded: a segment inside any sane image is shorter
		fill(img, image.Rect(x0+lo, y0+lo, x0+lo+width, y0+lo+width), c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			x0 += sx
		}
		if e2 <= dx {
			err += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
