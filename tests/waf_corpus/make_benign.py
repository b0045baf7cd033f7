"""Write benign.jsonl: the benign half of the WAF corpus (tests/unit/test_waf_corpus.py).

Run `python tests/waf_corpus/make_benign.py` to regenerate it (deterministic: a fixed seed).
The building blocks are what real sites receive: browser and client user agents and
cookies (analytics, consent managers, sessions, carts), search queries typed by people
(quotes, apostrophes, angle brackets, ampersands, SQL words in plain English, code terms),
names and addresses from many languages, REST and GraphQL API calls, form posts (login,
signup, checkout, contact, comments with light HTML from rich-text editors) and JSON
bodies. Each line: {"method", "target", "headers": [[name, value]...], "body"}.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from urllib.parse import quote, urlencode

HERE = Path(__file__).parent
rng = random.Random(13)

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.6723.107 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.11.0",
    "python-requests/2.32.3",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
    "axios/1.7.7",
    "PostmanRuntime/7.42.0",
    "Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001)",
    "MyShopApp/5.12.1 (iPhone; iOS 18.1; Scale/3.00)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
]
ACCEPT = [
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "application/json, text/plain, */*",
    "*/*",
    "application/json",
    "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
]
LANGS = ["en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "ja,en-US;q=0.7", "*"]


def hexid(n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def token(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(n))


def jwt() -> str:
    return f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{token(60)}.{token(43)}"


def cookies() -> str:
    ts = rng.randint(1_700_000_000, 1_760_000_000)
    pool = [
        f"_ga=GA1.2.{rng.randint(10**8, 10**9)}.{ts}",
        f"_gid=GA1.2.{rng.randint(10**8, 10**9)}.{ts}",
        f"_ga_{token(10).upper()}=GS1.1.{ts}.3.1.{ts + 600}.0.0.0",
        f"sessionid={hexid(32)}",
        f"csrftoken={token(32)}",
        f"PHPSESSID={hexid(26)}",
        f"JSESSIONID={hexid(32).upper()}.node{rng.randint(1, 4)}",
        "OptanonConsent=isGpcEnabled=0&datestamp=Mon+Dec+01+2025+10%3A04%3A12+GMT%2B0100+"
        "(Central+European+Standard+Time)&version=202310.1.0&browserGpcFlag=0&isIABGlobal=false"
        "&hosts=&landingPath=NotLandingPage&groups=C0001%3A1%2CC0002%3A0%2CC0004%3A0",
        "OptanonAlertBoxClosed=2025-11-28T09:12:44.101Z",
        f"cart=%7B%22items%22%3A{rng.randint(1, 9)}%2C%22currency%22%3A%22EUR%22%7D",
        "theme=dark",
        "lang=en-US",
        f"token={jwt()}",
        f"__cf_bm={token(43)}-{ts}-1.0.1.1-{token(20)}",
        "wp-settings-1=libraryContent%3Dbrowse%26editor%3Dtinymce%26posts_list_mode%3Dlist",
        f"wordpress_logged_in_{hexid(32)}=admin%7C{ts}%7C{token(20)}%7C{hexid(64)}",
        f"ajs_anonymous_id=%22{hexid(8)}-{hexid(4)}-{hexid(4)}-{hexid(4)}-{hexid(12)}%22",
        "cookieconsent_status=dismiss",
        f"_fbp=fb.1.{ts}123.{rng.randint(10**8, 10**9)}",
        f"intercom-session-{token(8)}={token(40)}%3D%3D--{hexid(40)}",
        "recently_viewed=sku-1021%2Csku-2231%2Csku-9001",
        f"_shopify_y={hexid(8)}-{hexid(4)}-{hexid(4)}",
    ]
    return "; ".join(rng.sample(pool, rng.randint(1, 6)))


SEARCHES = [
    "running shoes",
    "red dress size 10",
    '"machine learning" books',
    "O'Reilly python",
    "tom & jerry dvd",
    "rock 'n' roll t-shirt",
    "c++ vs c#",
    "how to center a <div>",
    "what does <br> do",
    "a < b < c",
    "<3 emoji meaning",
    "size<10 kids",
    "50% off sale",
    "100% cotton shirt",
    "select a wine for dinner",
    "union square hotels",
    "drop shipping suppliers",
    "order by price low to high",
    "update my address",
    "delete account",
    "where is my order",
    "insert coin arcade",
    "table for two",
    "join us careers",
    "from paris to london",
    "1=1 meaning in math",
    "x > 5 and y < 3",
    "if then else excel",
    "what is SQL",
    "sql server 2022 download",
    "sqlite vs postgres",
    "javascript tutorial",
    "java script for beginners",
    "alert sound iphone",
    "document shredder",
    "window cleaning service",
    "script writing course",
    'the "best" pizza near me',
    '"new york" steak',
    "rosé wine",
    "crème brûlée recipe",
    "São Paulo flights",
    "Zürich weather",
    "東京 ホテル",
    "北京 天气",
    "Москва ресторан",
    "café near me",
    "naïve bayes",
    "piñata party",
    "smörgåsbord",
    "emoji 😀 keyboard",
    "email@example.com",
    "#throwbackthursday",
    "--help flag linux",
    "semi; colon usage",
    "path/to/file",
    "C:\\Program Files\\App",
    "a+b",
    "2+2=4",
    "what's new",
    "don't stop",
    "it's a wonderful life",
    "l'oréal shampoo",
    "d'angelo voodoo",
    "ben & jerry's",
    "AT&T phone plans",
    "Q&A session",
    "R&D jobs",
    "M&M's",
    "salt & pepper grinder",
    "black & white photo",
    "5' 10\" in cm",
    '12" pizza',
    "1/2 inch pipe",
    "3/4 cup",
    "$100 gift card",
    "price: $50-$100",
    "50 usd to eur",
    "€20 voucher",
    "£ to $",
    "iphone 15 (128gb)",
    "[new] arrivals",
    "{curly} braces",
    "pipe | symbol",
    "tilde ~",
    "caret ^ meaning",
    "backslash \\ key",
    "star * rating",
    "question? mark",
    "!important css",
    "asterisk*",
    "under_score",
    "dash-case",
    "camelCase",
    "snake_case_names",
    "who let the dogs out",
    "or else what",
    "and then there were none",
    "not found error",
    "like a rolling stone",
    "between two ferns",
    "is it raining",
    "in the mood for love",
    "exec summary template",
    "execute order 66",
    "declare independence",
    "select all",
    "group by clause",
    "having a baby",
    "case when",
    "null pointer exception",
    "sleep apnea",
    "benchmark gpu",
    "waiting for delay",
    "char siu recipe",
    "concat strings python",
    "version control",
    "database design",
    "user guide pdf",
    "admin panel",
    "login page",
    "reset password",
    "password manager",
    "shell shock movie",
    "cat food",
    "cat toys",
    "ls engine swap",
    "id card holder",
    "echo dot",
    "ping pong table",
    "curl hair products",
    "wget alternative",
    "bash birthday party",
    "perl necklace",
    "ruby ring",
    "python snake",
    "nc state basketball",
    "env file",
    "find my iphone",
    "head and shoulders",
    "tail light",
    "more info",
    "less is more",
    "kill bill",
    "net worth",
    "sudo meaning",
    "ssh keys github",
    "etc passwords",
    "proc meaning",
    "windows 11 upgrade",
    "system32 folder",
    "boot ini",
    "win ini",
    "log files",
    "git tutorial",
    "env variables",
    "backup phone",
    "old town road",
    "sql injection",
    "xss prevention",
    "iframe embed youtube",
    "script tag async",
    "onload event",
    "onclick vs addEventListener",
    "<b>bold</b> text",
    "&amp; entity",
    "&lt; symbol",
    "%20 in url",
    "html &nbsp;",
    "utf-8 encoding",
    "\\n newline",
    "tab\\t",
    "Hello, World!",
    "Yes/No",
    "FAQ's",
    "kids' toys",
    "women's boots",
    "men's watches",
    "50's diner",
    "90's music",
    "rock & roll hall of fame",
    "bed & breakfast",
    "dungeons & dragons",
    "arts & crafts",
    "h&m jeans",
    "p&g products",
    "<<< triple",
    ">>> prompt",
    "-> arrow",
    "<- back",
    "=> fat arrow",
    "a=b",
    "key=value",
    "lol :)",
    ":-(",
    ";)",
    "x_x",
    "^_^",
    "o_O",
    "¯\\_(ツ)_/¯",
]
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "shipping",
    "order",
    "delivery",
    "great",
    "product",
    "quality",
    "price",
    "support",
    "team",
    "thanks",
    "again",
    "love",
    "it",
    "would",
    "buy",
    "recommend",
    "size",
    "fits",
    "well",
    "color",
    "exactly",
    "as",
    "pictured",
    "arrived",
    "late",
    "box",
    "damaged",
    "works",
    "fine",
    "battery",
    "lasts",
    "long",
    "screen",
    "bright",
    "sound",
    "clear",
    "easy",
    "setup",
    "instructions",
    "unclear",
    "customer",
    "service",
    "helpful",
    "refund",
    "replacement",
    "warranty",
    "gift",
    "wrapped",
    "birthday",
    "present",
    "daughter",
    "son",
    "husband",
    "wife",
    "friend",
]
FIRST = [
    "Anna",
    "José",
    "Zoë",
    "Liam",
    "Chloé",
    "Mohammed",
    "Yuki",
    "Søren",
    "Łukasz",
    "Renée",
    "Siobhán",
    "Björn",
    "Priya",
    "Olu",
    "Mei",
    "Jean-Luc",
    "Mary Ann",
]
LAST = [
    "O'Brien",
    "D'Angelo",
    "Müller",
    "García",
    "Nguyen",
    "Smith-Jones",
    "van der Berg",
    "Østergaard",
    "Kowalski",
    "Tanaka",
    "MacDonald",
    "Dubois",
    "Al-Hassan",
    "O'Neil",
]
STREETS = [
    "12 Rue de l'Église",
    "221B Baker St.",
    "1600 Amphitheatre Pkwy",
    "5th Ave & 42nd",
    "Hauptstraße 7",
    "Apt. #4, 33 King's Road",
    "P.O. Box 1234",
    "9 Queen's Gate",
]
CITIES = ["Paris", "London", "Mountain View", "New York", "Berlin", "Tokyo", "Québec", "Oslo"]
PASSWORDS = [
    "P@ssw0rd!2024",
    "correct horse battery staple",
    "Tr0ub4dor&3",
    "hunter2",
    "S3cure#Pass",
    "qwerty12345",
    "MyDog'sName1",
    'pa"ss%word',
    "letmein_99",
    "Xy!9#kL$2m",
    "summer2025?",
    "<my-secret>",
]
COMMENTS = [
    "Great product, would buy again!",
    "Arrived on time & well packed. 5 stars.",
    "Doesn't fit as expected - I'd order one size up.",
    'The "premium" version isn\'t worth it IMO.',
    "Works with my 2019 MacBook Pro (Intel).",
    "Question: does it ship to Canada? Thanks :)",
    "Love it <3 my kids use it every day",
    "Price went from $49 to $39, nice.",
    "Not bad... but the app's UI is confusing; settings are hidden.",
    "I'd give 4/5 - battery < 8h, not 10h as advertised.",
    "Use the code SAVE10 at checkout -> 10% off",
    "Setup: plug in, press & hold the button for 5 s, done.",
    "<p>Really <b>happy</b> with this purchase.</p>",
    '<p>See the <a href="https://example.com/manual.pdf">manual</a> for details.</p>',
    '<p>Photos:</p><p><img src="https://cdn.example.com/u/123/photo.jpg" alt="photo"></p>',
    "<ul><li>Pros: light</li><li>Cons: loud</li></ul>",
    "<blockquote>Best headphones I've owned</blockquote><p>Agreed!</p>",
    "<h2>Update</h2><p>After 3 months it's <em>still</em> working.</p>",
    "Line one\nLine two\nLine three",
    "Dear team,\n\nI ordered #A-10023 on Monday and it hasn't shipped yet.\n\nRegards,\nAnna",
    "Meeting notes:\n- select vendor\n- update budget\n- drop the old plan",
    "Can I return it if the box is opened? Order id: 88-1234",
    'My son\'s school requires "closed-toe" shoes; are these OK?',
    "Tried it w/ Windows & Linux; both fine.",
    "Where can I find the user guide? The link from the email 404s.",
    "Color is more blue-ish than the photo; still nice.",
    "Is the 128GB model in stock at the Zürich store?",
    "Ich bin sehr zufrieden, danke schön!",
    "Très bon produit, livraison rapide.",
    "とても良い商品です。また買います。",
    "Excellent 👍👍 fast delivery 🚚",
    'Fits 15.6" laptops; 16" won\'t fit.',
    "1) open the lid 2) insert batteries 3) close it",
    "Temps: min -5°C, max 40°C",
    "Email me at anna.obrien+shop@example.com if there's a restock",
]
GRAPHQL = [
    'query { product(id: "%d") { name price { amount currency } images { url } } }',
    "query Search($q: String!) { search(query: $q, first: 20) { edges { node { id title } } } }",
    'mutation { addToCart(productId: "%d", quantity: 2) { cart { id totalItems } } }',
    "query { me { id email orders(last: 5) { id status total } } }",
    "mutation UpdateProfile($input: ProfileInput!) { updateProfile(input: $input) { ok } }",
]


def words(n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def base_headers(api: bool = False) -> list[list[str]]:
    ua = rng.choice(USER_AGENTS[8:14] if api else USER_AGENTS)
    headers = [["host", rng.choice(["shop.example.com", "api.example.com", "www.example.org"])]]
    headers.append(["user-agent", ua])
    headers.append(["accept", rng.choice(ACCEPT[1:4] if api else ACCEPT)])
    headers.append(["accept-language", rng.choice(LANGS)])
    headers.append(["accept-encoding", "gzip, deflate, br, zstd"])
    if api:
        headers.append(["authorization", f"Bearer {jwt()}"])
        if rng.random() < 0.5:
            headers.append(["x-request-id", f"{hexid(8)}-{hexid(4)}-{hexid(4)}"])
        if rng.random() < 0.4:
            headers.append(["x-api-key", token(32)])
    else:
        headers.append(["cookie", cookies()])
        if rng.random() < 0.6:
            q = quote(rng.choice(SEARCHES))
            headers.append(["referer", f"https://www.google.com/search?q={q}&hl=en"])
        headers.append(["sec-fetch-mode", "navigate"])
        headers.append(["sec-ch-ua", '"Chromium";v="131", "Not_A Brand";v="24"'])
    if rng.random() < 0.2:
        headers.append(
            ["x-forwarded-for", f"203.0.113.{rng.randint(1, 254)}, 10.0.0.{rng.randint(1, 254)}"]
        )
    return headers


def req(method: str, target: str, headers: list, body: str | None = None, ctype: str = ""):
    if ctype:
        headers.append(["content-type", ctype])
    return {"method": method, "target": target, "headers": headers, "body": body}


def page_views() -> list[dict]:
    out = []
    paths = [
        "/",
        "/products",
        "/products/sku-1021",
        "/cart",
        "/checkout",
        "/account/orders",
        "/blog/2025/11/how-we-ship-faster",
        "/help/returns",
        "/static/js/app.3f9a1c.js",
        "/static/css/main.css",
        "/images/banner%20winter.jpg",
        "/favicon.ico",
        "/robots.txt",
        "/sitemap.xml",
        "/de/produkte/schuhe",
        "/fr/caf%C3%A9",
        "/p/crème-brûlée-set",
        "/c/women's-boots",
        "/wiki/C%2B%2B",
        "/wiki/Rock_%26_roll",
    ]
    for path in paths:
        for _ in range(6):
            out.append(req("GET", path, base_headers()))
    for query in SEARCHES:
        params = {"q": query}
        if rng.random() < 0.4:
            params["page"] = str(rng.randint(1, 9))
        if rng.random() < 0.3:
            params["sort"] = rng.choice(["price_asc", "-created_at", "relevance", "rating desc"])
        out.append(req("GET", "/search?" + urlencode(params), base_headers()))
        out.append(req("GET", "/search?q=" + quote(query, safe=""), base_headers()))
    utm = (
        "/?utm_source=newsletter&utm_medium=email&utm_campaign=black_friday_2025"
        "&utm_content=hero%20banner"
    )
    for _ in range(10):
        out.append(req("GET", utm, base_headers()))
        out.append(
            req(
                "GET",
                f"/products?color=red&size=M&price_min=10&price_max=100&fbclid={token(40)}",
                base_headers(),
            )
        )
    return out


def api_calls() -> list[dict]:
    out = []
    for _ in range(120):
        n = rng.randint(1, 99999)
        target = rng.choice(
            [
                f"/api/v1/users/{n}",
                f"/api/v1/orders?status=shipped&sort=-created_at&page={n % 20}&per_page=50",
                f"/api/v2/products?filter[category]=shoes&filter[price][lt]={n % 300}"
                "&include=images",
                f"/api/v1/search?q={quote(rng.choice(SEARCHES))}&limit=20&offset={n % 100}",
                f"/api/v1/orders/{n}/items?fields=id,sku,qty,price",
                f"/api/v1/stores/nearby?lat=48.8{n % 100}&lng=2.3{n % 100}&radius=5km",
                "/api/v1/reports/sales?from=2025-01-01&to=2025-12-31&group_by=month"
                "&tz=Europe%2FParis",
                f"/api/v1/files/{hexid(24)}/download?disposition=attachment",
                f"/v1/customers/cus_{token(14)}/invoices?expand[]=data.subscription",
                f"/api/v1/events?since={rng.randint(1_700_000_000, 1_760_000_000)}"
                "&types=order.created,order.paid",
            ]
        )
        out.append(req("GET", target, base_headers(api=True)))
    for _ in range(120):
        n = rng.randint(1, 99999)
        body = rng.choice(
            [
                {
                    "email": f"{rng.choice(FIRST).lower()}@example.com",
                    "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                    "marketing_opt_in": rng.random() < 0.5,
                },
                {
                    "items": [{"sku": f"sku-{n}", "qty": rng.randint(1, 4)}],
                    "coupon": "SAVE10",
                    "shipping": {
                        "street": rng.choice(STREETS),
                        "city": rng.choice(CITIES),
                        "zip": f"{n:05d}",
                        "notes": rng.choice(
                            [
                                "Leave at door",
                                "Ring twice",
                                "Call on arrival: +33 6 12 34 56 78",
                                "",
                            ]
                        ),
                    },
                },
                {
                    "query": rng.choice(GRAPHQL).replace("%d", str(n)),
                    "variables": {"q": rng.choice(SEARCHES)},
                },
                {"rating": rng.randint(1, 5), "title": words(4), "body": rng.choice(COMMENTS)},
                {
                    "event": "page_view",
                    "properties": {
                        "path": "/products",
                        "referrer": "https://www.google.com/",
                        "title": "Shoes & Boots | Shop",
                    },
                    "timestamp": n,
                },
                {"status": "shipped", "tracking": f"1Z{token(16).upper()}", "carrier": "UPS"},
                {
                    "settings": {
                        "theme": "dark",
                        "language": "fr-CA",
                        "timezone": "America/Toronto",
                        "notifications": {"email": True, "sms": False},
                    }
                },
                {
                    "filter": {
                        "and": [
                            {"field": "price", "op": "lt", "value": 100},
                            {"field": "brand", "op": "in", "value": ["Acme", "Müller & Co"]},
                        ]
                    },
                    "sort": [{"field": "created_at", "order": "desc"}],
                },
                {"message": rng.choice(COMMENTS), "conversation_id": f"conv_{token(12)}"},
                {"password": rng.choice(PASSWORDS), "username": rng.choice(FIRST).lower()},
            ]
        )
        headers = base_headers(api=True)
        method = rng.choice(["POST", "POST", "PUT", "PATCH"])
        out.append(
            req(
                method,
                "/api/v1/" + rng.choice(["users", "orders", "graphql", "reviews", "events"]),
                headers,
                json.dumps(body, ensure_ascii=rng.random() < 0.5),
                "application/json",
            )
        )
    return out


def forms() -> list[dict]:
    out = []
    for _ in range(60):
        fields = {
            "username": rng.choice(FIRST).lower(),
            "password": rng.choice(PASSWORDS),
            "remember_me": "on",
            "csrfmiddlewaretoken": token(64),
        }
        out.append(
            req(
                "POST",
                "/login",
                base_headers(),
                urlencode(fields),
                "application/x-www-form-urlencoded",
            )
        )
    for _ in range(60):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        fields = {
            "first_name": first,
            "last_name": last,
            "email": f"{first.lower().replace(' ', '.')}.{rng.randint(1, 99)}@example.com",
            "address": rng.choice(STREETS),
            "city": rng.choice(CITIES),
            "phone": f"+1 (555) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
            "company": rng.choice(
                [
                    "Acme Inc.",
                    "Müller & Söhne GmbH",
                    "O'Brien & Co",
                    "Smith, Jones & Partners LLP",
                    "",
                ]
            ),
            "terms": "accepted",
        }
        out.append(
            req(
                "POST",
                "/checkout/address",
                base_headers(),
                urlencode(fields),
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
        )
    for _ in range(80):
        fields = {
            "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "subject": rng.choice(
                [
                    "Order question",
                    "Return & refund",
                    "Size?",
                    'Re: your "quick" reply',
                    "Partnership",
                ]
            ),
            "message": rng.choice(COMMENTS) + "\r\n" + rng.choice(COMMENTS),
            "product_id": str(rng.randint(1, 9999)),
        }
        out.append(
            req(
                "POST",
                "/contact",
                base_headers(),
                urlencode(fields),
                "application/x-www-form-urlencoded",
            )
        )
    for _ in range(40):
        out.append(
            req(
                "POST",
                "/newsletter",
                base_headers(),
                urlencode(
                    {
                        "email": f"{rng.choice(FIRST).lower()}@example.org",
                        "lists[]": "weekly",
                        "source": "footer",
                    }
                ),
                "application/x-www-form-urlencoded",
            )
        )
    for _ in range(30):
        out.append(
            req(
                "POST",
                "/api/v1/notes",
                base_headers(api=True),
                rng.choice(COMMENTS) + "\n" + words(20),
                "text/plain; charset=utf-8",
            )
        )
    return out


def main() -> None:
    rows = page_views() + api_calls() + forms()
    with (HERE / "benign.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(len(rows), "benign requests")


if __name__ == "__main__":
    main()
